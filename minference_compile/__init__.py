from .config import MInferenceConfig, get_support_models
from .backend import minference_backend
from .explain import explain
