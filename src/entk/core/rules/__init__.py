"""Layer rules of the structured path, one class per layer type, keyed by the torch functions they read.

Adding a layer type is one ``Rule`` subclass in one file here, listed in ``RULES``.
"""

from entk.core.rules.base import Call, Rule, Use
from entk.core.rules.bias import BiasRule
from entk.core.rules.conv import ConvRule
from entk.core.rules.embedding import EmbeddingRule, IndexRule
from entk.core.rules.linear import EinsumRule, LinearRule, MatmulRule

RULES: tuple[Rule, ...] = (
    LinearRule(),
    MatmulRule(),
    EinsumRule(),
    EmbeddingRule(),
    IndexRule(),
    ConvRule(),
    BiasRule(),
)
BY_FUNCTION = {f: rule for rule in RULES for f in rule.functions}

__all__ = ["BY_FUNCTION", "RULES", "Call", "Rule", "Use"]
