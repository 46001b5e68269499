"""Drawing primitives of the layouts: a white page, drawn on in page units (longest side 1000)."""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

_FONTS = {}


def _font(px):
    """Pillow's default font at `px` pixels, cached."""
    px = max(4, int(px))
    if px not in _FONTS:
        try:
            _FONTS[px] = ImageFont.load_default(size=px)  # FreeType build: scalable font
        except (TypeError, OSError, ImportError):  # pragma: no cover - Pillow without FreeType
            _FONTS[px] = ImageFont.load_default()
    return _FONTS[px]


class Page:
    """A white page with drawing helpers in page units (longest side = 1000 units)."""

    def __init__(self, width_px, height_px, rng):
        self.rng = rng
        self.u = max(width_px, height_px) / 1000.0
        self.W = width_px / self.u
        self.H = height_px / self.u
        self.img = Image.new("L", (width_px, height_px), 255)
        self.d = ImageDraw.Draw(self.img)
        self.ink = int(rng.integers(15, 60))

    # -- basics ---------------------------------------------------------------------------
    def shade(self, spread=25):
        return int(min(200, self.ink + self.rng.integers(0, spread)))

    def _px(self, v):
        return int(round(v * self.u))

    def rect(self, x0, y0, x1, y1, fill=None, outline=None, width=1.0):
        x0, x1 = sorted((x0, x1))
        y0, y1 = sorted((y0, y1))
        box = [self._px(x0), self._px(y0), max(self._px(x0), self._px(x1) - 1),
               max(self._px(y0), self._px(y1) - 1)]
        self.d.rectangle(box, fill=fill, outline=outline,
                         width=max(1, int(round(width * self.u))) if outline is not None else 0)

    def bar(self, x, y, w, h, fill=None):
        self.rect(x, y, x + max(w, 1.0 / self.u), y + max(h, 1.0 / self.u),
                  fill=self.shade() if fill is None else fill)

    def hline(self, x0, x1, y, t=1.0, fill=None):
        fill = self.shade(10) if fill is None else fill
        self.rect(x0, y, x1, y + max(t, 1.0 / self.u), fill=fill)

    def vline(self, x, y0, y1, t=1.0, fill=None):
        fill = self.shade(10) if fill is None else fill
        self.rect(x, y0, x + max(t, 1.0 / self.u), y1, fill=fill)

    def box(self, x0, y0, x1, y1, t=1.0, fill=None):
        self.rect(x0, y0, x1, y1, outline=self.shade(10) if fill is None else fill, width=t)

    def text(self, x, y, s, size, bold=False, fill=None, anchor="la"):
        """Real text with Pillow's default font; returns its width in units."""
        font = _font(size * self.u)
        fill = self.shade(10) if fill is None else fill
        stroke = max(1, int(size * self.u / 18)) if bold else 0
        self.d.text((self._px(x), self._px(y)), s, font=font, fill=fill, anchor=anchor,
                    stroke_width=stroke, stroke_fill=fill)
        return (font.getlength(s) + 2 * stroke) / self.u

    def text_width(self, s, size):
        return _font(size * self.u).getlength(s) / self.u

    # -- text as word bars ----------------------------------------------------------------
    def words(self, x0, x1, y, h, fill=1.0, fill_px=None, mean=4.5, gap=0.9):
        """One line of word bars from x0 to about x0 + fill * (x1 - x0); returns the end x."""
        rng = self.rng
        limit = x0 + fill * (x1 - x0)
        n = int((x1 - x0) / (h * (1.5 + gap))) + 2
        widths = np.clip(rng.lognormal(np.log(mean * h), 0.5, n), 1.3 * h, 12 * h)
        x = x0
        shade = self.shade() if fill_px is None else fill_px
        for w in widths:
            if x + w > limit:
                if x == x0:  # at least one (shortened) word
                    w = max(limit - x, h)
                else:
                    break
            self.rect(x, y, x + w, y + h, fill=shade)
            x += w + gap * h
        return x - gap * h

    def para(self, x0, x1, y, n, lh, h=None, indent=0.0, last=(0.15, 0.85), ragged=0.0):
        """A paragraph of n lines (pitch lh); returns the y after it."""
        h = lh * 0.45 if h is None else h
        for i in range(n):
            fill = 1.0 - ragged * self.rng.random()
            if i == n - 1:
                fill = self.rng.uniform(*last)
            self.words(x0 + (indent if i == 0 else 0.0), x1, y, h, fill=fill)
            y += lh
        return y

    def centered(self, cx, y, w, h, shade=None):
        self.words(cx - w / 2, cx + w / 2, y, h, fill=1.0, fill_px=shade)

    # -- other marks ----------------------------------------------------------------------
    def photo(self, x0, y0, x1, y1, lo=30, hi=210):
        """A halftone-ish picture: smooth random blobs of gray."""
        rng = self.rng
        wpx, hpx = max(2, self._px(x1 - x0)), max(2, self._px(y1 - y0))
        gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 6))
        small = rng.integers(lo, hi, (gh, gw)).astype(np.uint8)
        pic = Image.fromarray(small, "L").resize((wpx, hpx), Image.BICUBIC)
        self.img.paste(pic, (self._px(x0), self._px(y0)))
        for _ in range(int(rng.integers(1, 4))):  # a few shapes on top
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
            r = rng.uniform(0.1, 0.3) * min(x1 - x0, y1 - y0)
            box = [self._px(max(x0, cx - r)), self._px(max(y0, cy - r)),
                   self._px(min(x1, cx + r)), self._px(min(y1, cy + r))]
            if box[2] > box[0] and box[3] > box[1]:
                self.d.ellipse(box, fill=int(rng.integers(lo, hi)))

    def scribble(self, x0, x1, y, h, t=2.0, slant=0.3, word=(30, 110)):
        """A line of handwriting: separate wavy words between x0 and x1, height h."""
        rng = self.rng
        x = x0
        shade = self.shade()
        width = max(1, int(round(t * self.u)))
        while True:
            w = rng.uniform(*word)
            if x + w > x1:
                break
            n = max(4, int(w / (h * 0.22)))
            xs = np.linspace(x, x + w, n)
            phase = rng.uniform(0, 2 * np.pi)
            amp = h * rng.uniform(0.25, 0.5)
            ys = y + h * 0.5 + amp * np.sin(phase + np.arange(n) * rng.uniform(1.6, 2.6))
            ys += rng.normal(0, h * 0.12, n)
            up = rng.random(n) < 0.15  # ascenders / descenders
            ys[up] -= h * rng.uniform(0.4, 0.9, int(up.sum()))
            xs = xs + (y + h * 0.5 - ys) * slant
            pts = [(self._px(a), self._px(b)) for a, b in zip(xs, ys)]
            self.d.line(pts, fill=shade, width=width, joint="curve")
            x += w + rng.uniform(0.4, 1.0) * h
        return x

    def signature(self, x, y, w, h):
        rng = self.rng
        n = int(rng.integers(30, 60))
        t = np.linspace(0, 1, n)
        loops = rng.uniform(3, 7)
        xs = x + t * w + h * 0.35 * np.cos(2 * np.pi * loops * t + rng.uniform(0, 6))
        ys = y + h * 0.5 + h * 0.45 * np.sin(2 * np.pi * loops * t) * rng.uniform(0.6, 1.0)
        ys += np.cumsum(rng.normal(0, h * 0.03, n))
        pts = [(self._px(a), self._px(b)) for a, b in zip(xs, ys)]
        self.d.line(pts, fill=self.shade(), width=max(1, int(round(2 * self.u))), joint="curve")

    def checkbox(self, x, y, s, ticked=None):
        self.box(x, y, x + s, y + s, t=1.2)
        if ticked or (ticked is None and self.rng.random() < 0.25):
            pts = [(self._px(x + 0.1 * s), self._px(y + 0.5 * s)),
                   (self._px(x + 0.4 * s), self._px(y + 0.9 * s)),
                   (self._px(x + 1.1 * s), self._px(y - 0.2 * s))]
            self.d.line(pts, fill=self.shade(), width=max(1, int(round(2 * self.u))))

    def bullet(self, x, y, r):
        self.d.ellipse([self._px(x - r), self._px(y - r), self._px(x + r), self._px(y + r)],
                       fill=self.shade())

    def table(self, x0, y0, x1, rows, rh, cols, grid=True, header=True, numeric=(), frame=1.5,
              header_fill=None):
        """A table: `cols` are relative column widths; numeric columns are right-aligned."""
        rng = self.rng
        cols = np.asarray(cols, dtype=float)
        edges = x0 + np.concatenate([[0.0], np.cumsum(cols / cols.sum())]) * (x1 - x0)
        y_end = y0 + rows * rh
        self.box(x0, y0, x1, y_end, t=frame)
        th = rh * 0.4
        for r in range(rows):
            y = y0 + r * rh
            if r > 0 and (grid or (header and r == 1)):
                self.hline(x0, x1, y, t=1.5 if r == 1 and header else 0.8)
            if header and r == 0 and header_fill is not None:
                self.rect(x0, y, x1, y + rh, fill=header_fill)
            for c in range(len(cols)):
                cx0, cx1 = edges[c] + 0.25 * rh, edges[c + 1] - 0.25 * rh
                if cx1 - cx0 < th or rng.random() < 0.08:
                    continue
                ty = y + (rh - th) / 2
                fill_px = 255 if (header and r == 0 and header_fill is not None) else None
                if c in numeric and not (header and r == 0):
                    w = min(cx1 - cx0, th * rng.integers(3, 9) * 0.7)
                    self.bar(cx1 - w, ty, w, th, fill=fill_px)
                else:
                    self.words(cx0, cx1, ty, th, fill=rng.uniform(0.3, 1.0), fill_px=fill_px)
        if grid:
            for e in edges[1:-1]:
                self.vline(e, y0, y_end, t=0.8)
        return y_end
