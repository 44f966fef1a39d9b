"""Tiny in-process model + char tokenizer for the eval/demo tests (no downloads)."""
import torch


class CharTokenizer:
    """ASCII characters as ids (unknown -> '?'); duck-types the bits of a HF tokenizer the eval uses."""

    chat_template = None
    bos_token_id = None
    eos_token_id = 0
    vocab_size = 128

    def __call__(self, text, add_special_tokens=False, return_tensors=None):
        ids = [ord(c) if 0 < ord(c) < 128 else ord("?") for c in text]

        class Enc:
            input_ids = torch.tensor([ids]) if return_tensors == "pt" else ids
        return Enc()

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if i > 0)


def tiny_llama(layers=2, seed=0, sharpen=1.0):
    """hidden 256 / 4 q-heads / 2 kv-heads: head_dim 64 (a supported size); vocab 128 (ASCII)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=256, intermediate_size=256, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                      eos_token_id=0, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).eval()
    if sharpen != 1.0:  # peakier attention and logits: a sparse pattern that drops mass changes the output
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.weight.mul_(sharpen)
                layer.self_attn.k_proj.weight.mul_(sharpen)
            model.lm_head.weight.mul_(sharpen)
    return model
