"""The figures: matplotlib drawings of what the analyses computed.

Torch-free like ``entk.analyses``, which is all it imports besides ``entk.shared``.
"""
