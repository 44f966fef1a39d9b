"""FX passes on the Dynamo graph (installed as ``minference_compile.passes``)."""
from .causal_mask import MaskProof, prove_causal_mask
from .rotary_tables import MaterializeRotaryTables
from .sdpa_rewrite import SDPA_TARGETS, MInferenceSDPAPass, SDPAMatch, layer_from_stack

__all__ = ["MInferenceSDPAPass", "MaterializeRotaryTables", "SDPAMatch", "MaskProof", "prove_causal_mask", "layer_from_stack", "SDPA_TARGETS"]
