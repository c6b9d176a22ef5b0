"""What every backend and kernel of SLaK's "same"-padded depthwise conv
shares: which taps of a kernel can reach a map."""

import torch


def reachable_kernel(
    weight: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Crops an odd kernel to the taps that can touch a ``height x width`` map.

    With "same" padding, tap offset ``d`` along an axis of length ``L`` only
    ever multiplies zero padding when ``|d| >= L``, so a kernel axis longer
    than ``2L - 1`` can be cropped to its centre ``2L - 1`` taps exactly.

    Args:
        weight (Tensor): Shape ``(C, 1, kh, kw)``, ``kh`` and ``kw`` odd.
        height (int): Height H of the feature map.
        width (int): Width W of the feature map.

    Returns:
        Tensor: ``weight`` itself when nothing is cropped, else a view of
        shape ``(C, 1, min(kh, 2H - 1), min(kw, 2W - 1))``.
    """
    kh, kw = weight.shape[2:]
    crop_h = max(0, (kh - (2 * height - 1)) // 2)
    crop_w = max(0, (kw - (2 * width - 1)) // 2)
    if crop_h == 0 and crop_w == 0:
        return weight
    return weight[:, :, crop_h : kh - crop_h, crop_w : kw - crop_w]
