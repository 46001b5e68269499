"""Simulated scanner: skew, blur, uneven paper, noise, speckles, borders."""
import numpy as np
from PIL import Image, ImageFilter

_NOISE_BANK = []


def _noise(rng, h, w):
    """Unit gaussian noise, HxW float32: a random window of a fixed bank (4x faster to take)."""
    n = h * w
    if not _NOISE_BANK:
        bank = np.random.default_rng(20240601).standard_normal(1 << 22, dtype=np.float32)
        _NOISE_BANK.append(np.clip(bank * 24, -127, 127).astype(np.int8))
    bank = _NOISE_BANK[0]
    if n > bank.size // 2:
        return rng.standard_normal((h, w), dtype=np.float32)
    start = int(rng.integers(0, bank.size - n))
    return bank[start:start + n].reshape(h, w).astype(np.float32) * np.float32(1 / 24)


def scan(img, rng, u):
    """Simulated scanner: skew, blur, uneven paper, noise, speckles, borders."""
    w, h = img.size
    angle = float(np.clip(rng.normal(0, 0.5), -1.5, 1.5))
    img = img.rotate(angle, resample=Image.NEAREST, fillcolor=255)
    if rng.random() < 0.7:
        img = img.filter(ImageFilter.SMOOTH)
    darkness = 255.0 - np.asarray(img, dtype=np.float32)
    # uneven paper brightness: a smooth low-resolution field
    paper = rng.uniform(226, 258)  # above 255: clean white paper after clipping
    gh, gw = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    field = rng.uniform(rng.uniform(0.86, 0.97), 1.0, (gh, gw)).astype(np.float32)
    field = np.asarray(Image.fromarray(field, "F").resize((w, h), Image.BILINEAR))
    out = paper * field - darkness * rng.uniform(0.85, 1.0)
    out += _noise(rng, h, w) * np.float32(rng.uniform(1.5, 6.0))
    # speckles (dust) dark and light
    n = int(rng.poisson(w * h * rng.uniform(0.0001, 0.0008)))
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    out[ys, xs] = rng.uniform(0, 120, n)
    m = n // 4
    out[ys[:m], xs[:m] - 1] = out[ys[:m], xs[:m]]  # some 2-pixel specks
    if rng.random() < 0.15:  # punch holes on the left
        for cy in (0.25, 0.75):
            yy, xx = np.ogrid[:h, :int(60 * u)]
            r = 11 * u
            hole = (yy - cy * h) ** 2 + (xx - 30 * u) ** 2 < r * r
            out[:, :xx.shape[1]][hole] = rng.uniform(20, 60)
    if rng.random() < 0.2:  # dark border where the scan went past the paper
        for edge in rng.choice(4, int(rng.integers(1, 3)), replace=False):
            length = h if edge < 2 else w
            base = rng.uniform(2, 22) * u
            prof = np.maximum(0, base + np.cumsum(rng.normal(0, 0.3 * u, length)))
            idx = np.arange(w if edge < 2 else h, dtype=np.float32)
            if edge == 0:    # left
                mask = idx[None, :] < prof[:, None]
            elif edge == 1:  # right
                mask = idx[None, :] >= (w - prof)[:, None]
            elif edge == 2:  # top
                mask = idx[:, None] < prof[None, :]
            else:            # bottom
                mask = idx[:, None] >= (h - prof)[None, :]
            out[mask] = rng.uniform(5, 50)
    np.clip(out, 0, 255, out=out)
    return (out + 0.5).astype(np.uint8)
