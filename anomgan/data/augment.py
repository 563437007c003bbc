"""The papers' augmentations, applied per image to a batch (B, C, H, W), seeded by a
``torch.Generator`` (so a checkpoint holding the generator's state resumes them exactly).

* ``hflip`` / ``vflip``: mirror each image with probability 1/2;
* ``rot90``: rotate each image by 0, 90, 180 or 270 degrees (uniform; square images only);
* ``crop=p``: Kim et al.'s "crop 0..p pixels from each border and resize back" (bilinear);
* ``pad_crop=p``: pad by p pixels (reflection) and take a random crop of the original size.
Random numbers are drawn in that fixed order, all of them on every call, so the stream does not
depend on which images got which transform. ``__call__(x, g, total=T, offset=o)`` draws the
numbers of a batch of T images and applies those of rows o..o+B-1 to ``x``: a process holding
one shard of a global batch transforms its images exactly as one process holding the whole
batch would.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._validate import check_int


class Augment:
    def __init__(self, *, hflip: bool = False, vflip: bool = False, rot90: bool = False,
                 crop: int = 0, pad_crop: int = 0):
        self.hflip, self.vflip, self.rot90 = bool(hflip), bool(vflip), bool(rot90)
        self.crop = check_int("Augment", "crop", crop, minimum=0)  # pixels
        self.pad_crop = check_int("Augment", "pad_crop", pad_crop, minimum=0)

    @classmethod
    def from_config(cls, config: "dict | Augment | None") -> "Augment | None":
        if config is None or isinstance(config, Augment):
            return config
        if not isinstance(config, dict):
            raise TypeError(f"augment must be None, a dict or an Augment, got {type(config).__name__}")
        return cls(**config)

    def config(self) -> dict:
        return {"hflip": self.hflip, "vflip": self.vflip, "rot90": self.rot90, "crop": self.crop,
                "pad_crop": self.pad_crop}

    def __bool__(self) -> bool:
        return any(self.config().values())

    def __call__(self, x: torch.Tensor, generator: torch.Generator, *, total: int | None = None,
                 offset: int = 0) -> torch.Tensor:
        """A new (B, C, H, W) tensor; ``x`` is left unchanged (see the module doc for
        ``total`` / ``offset``)."""
        if x.ndim != 4:
            raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
        b, _, h, w = x.shape
        total = b if total is None else total
        if offset < 0 or offset + b > total:
            raise ValueError(f"rows {offset}..{offset + b - 1} do not lie in a batch of total={total}")
        g = generator
        dev = x.device

        def draw(n_max: int, *shape: int) -> torch.Tensor:
            full = torch.randint(0, n_max, (total, *shape[1:]), generator=g)
            return full[offset:offset + b].to(dev)

        if self.hflip:
            m = draw(2, b).bool().view(b, 1, 1, 1)
            x = torch.where(m, x.flip(-1), x)
        if self.vflip:
            m = draw(2, b).bool().view(b, 1, 1, 1)
            x = torch.where(m, x.flip(-2), x)
        if self.rot90:
            if h != w:
                raise ValueError(f"rot90 needs square images, got {h}x{w}")
            k = draw(4, b).view(b, 1, 1, 1)
            out = x
            for r in (1, 2, 3):
                out = torch.where(k == r, torch.rot90(x, r, dims=(-2, -1)), out)
            x = out
        if self.crop:
            cuts = draw(self.crop + 1, b, 4).tolist()
            rows = []
            for i, (t, btm, lft, rgt) in enumerate(cuts):
                if h - t - btm < 1 or w - lft - rgt < 1 or (t + btm + lft + rgt) == 0:
                    rows.append(x[i:i + 1])
                    continue
                part = x[i:i + 1, :, t:h - btm, lft:w - rgt]
                rows.append(F.interpolate(part, size=(h, w), mode="bilinear", align_corners=False))
            x = torch.cat(rows)
        if self.pad_crop:
            p = self.pad_crop
            mode = "reflect" if p < h and p < w else "replicate"
            padded = F.pad(x, (p, p, p, p), mode=mode)
            offs = draw(2 * p + 1, b, 2).tolist()
            x = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offs)])
        return x.contiguous()
