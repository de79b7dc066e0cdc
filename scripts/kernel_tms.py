"""Rule kernel_tms: flattened eNTK of one TMS model (all outputs, unweighted) in compact form."""

import time

import entk
from entk import workflow as wf
from entk.models import load_tms

sm = snakemake  # noqa: F821 (injected by Snakemake)
with wf.logged(sm.log[0]):
    wf.set_threads(sm.threads)
    device, dtype = wf.resolve_device(sm.params.device), wf.torch_dtype(sm.params.dtype)
    model, x, _ = load_tms(sm.input.model)
    model, x = model.to(device, dtype), x.to(device, dtype)
    start = time.perf_counter()
    kernel = entk.compact_ntk(model, x, params=sm.params.layer, outputs="flatten")
    print(
        f"kernel {sm.wildcards.layer}: {kernel.kind} {tuple(kernel.data.shape)} "
        f"({kernel.data.numel() * kernel.data.element_size() / 2**20:.1f} MiB) in "
        f"{time.perf_counter() - start:.2f} s"
    )
    wf.save_npz(sm.output.kernel, **kernel.to_numpy_dict())
