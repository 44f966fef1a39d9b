"""Torch helpers shared by the index builders and the ops: host lists to the device, half GEMMs with fp32 out."""
from typing import Optional, Sequence

import torch


def device_tensor(values: Sequence[int], device, dtype=torch.int32) -> torch.Tensor:
    """Host list -> tensor on `device` without a device sync (pinned, non-blocking copy)."""
    t = torch.tensor(list(values), dtype=dtype)
    if torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


_BMM_OUT_DTYPE = [True]  # cleared once torch turns out to lack bmm(out_dtype=): no exception per call after that


def bmm_fp32_out(a: torch.Tensor, b: torch.Tensor) -> Optional[torch.Tensor]:
    """a [N,M,K] @ b [N,K,P] -> fp32 [N,M,P] for bf16/fp16 CUDA inputs, with no fp32 copy of either input;
    None where that path does not apply (other dtypes or devices, torch without `bmm(out_dtype=)`)."""
    if not _BMM_OUT_DTYPE[0] or not a.is_cuda or a.dtype not in (torch.float16, torch.bfloat16):
        return None
    try:
        return torch.bmm(a, b, out_dtype=torch.float32)
    except (TypeError, NotImplementedError):
        _BMM_OUT_DTYPE[0] = False
    except RuntimeError:  # e.g. a dtype pair this torch build has no kernel for
        pass
    return None
