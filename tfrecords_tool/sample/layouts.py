"""The 16 page layouts, one per class (LAYOUTS[class_id]), and each class's page size.

Each layout draws on a `Page`; randomness comes only from p.rng.
"""
import numpy as np

from tfrecords_tool.classes import NUM_CLASSES, RVL_CDIP_CLASSES

_PRESENTATION = RVL_CDIP_CLASSES.index("presentation")

_WORDS = ("Report", "Summary", "Annual", "Research", "Program", "Product", "Review", "Notice",
          "Study", "Results", "Project", "Quality", "Company", "Marketing", "Sales", "Request",
          "Analysis", "Meeting", "Division", "Department", "Development", "Services")


def _title(rng, n=(1, 3)):
    return " ".join(rng.choice(_WORDS, int(rng.integers(n[0], n[1] + 1)), replace=False))


def _margins(p, lo=55, hi=100):
    ml = p.rng.uniform(lo, hi)
    mr = p.W - p.rng.uniform(lo, hi)
    return ml, mr


def _letter(p):
    rng = p.rng
    ml, mr = _margins(p, 70, 110)
    cx = (ml + mr) / 2 if rng.random() < 0.5 else None
    y = rng.uniform(35, 70)
    # letterhead
    size = rng.uniform(20, 32)
    name = _title(rng, (1, 2)).upper()
    if cx is not None:
        if rng.random() < 0.35:  # logo above the name
            s = rng.uniform(30, 50)
            p.d.ellipse([p._px(cx - s / 2), p._px(y), p._px(cx + s / 2), p._px(y + s)],
                        fill=p.shade())
            y += s + 10
        w = p.text_width(name, size)
        p.text(cx - w / 2, y, name, size, bold=True)
        y += size * 1.3
        p.centered(cx, y, rng.uniform(180, 380), 5)
        y += 12
        p.centered(cx, y, rng.uniform(120, 300), 5)
    else:
        s = rng.uniform(40, 70)
        p.rect(ml, y, ml + s, y + s, fill=p.shade())
        p.text(ml + s + 15, y + 3, name, size, bold=True)
        p.words(ml + s + 15, mr, y + size + 12, 5, fill=rng.uniform(0.3, 0.6))
        y += s - 10
    y += rng.uniform(18, 30)
    if rng.random() < 0.6:
        p.hline(ml, mr, y, t=rng.uniform(1, 3))
    y += rng.uniform(30, 70)
    lh = rng.uniform(14, 19)
    h = lh * 0.5
    # date
    dx = ml if rng.random() < 0.6 else (ml + mr) / 2
    p.words(dx, dx + 130, y, h, fill=1.0)
    y += lh * rng.uniform(2.5, 4)
    # inside address
    for _ in range(int(rng.integers(3, 6))):
        p.words(ml, ml + rng.uniform(110, 240), y, h)
        y += lh
    y += lh
    p.words(ml, ml + rng.uniform(80, 160), y, h)  # salutation
    y += lh * 2
    limit = p.H - rng.uniform(170, 260)
    indent = lh * 3 if rng.random() < 0.5 else 0.0
    for _ in range(int(rng.integers(2, 6))):
        n = int(rng.integers(3, 9))
        if y + n * lh > limit:
            n = int((limit - y) / lh)
            if n < 2:
                break
        y = p.para(ml, mr, y, n, lh, h, indent=indent) + lh
    # closing and signature
    sx = ml if rng.random() < 0.5 else (ml + mr) / 2
    p.words(sx, sx + rng.uniform(60, 110), y, h)
    y += lh * 1.3
    p.signature(sx, y, rng.uniform(110, 200), rng.uniform(30, 50))
    y += rng.uniform(50, 70)
    p.words(sx, sx + rng.uniform(90, 160), y, h)
    p.words(sx, sx + rng.uniform(70, 150), y + lh, h)
    if rng.random() < 0.4:
        p.words(ml, ml + rng.uniform(60, 150), p.H - rng.uniform(50, 80), h * 0.8)


def _form(p):
    rng = p.rng
    ml, mr = _margins(p, 30, 60)
    y = rng.uniform(25, 50)
    p.text(ml, y, f"FORM {int(rng.integers(100, 9999))}", 9)
    title = _title(rng, (1, 2)).upper() + " FORM"
    size = rng.uniform(16, 24)
    w = p.text_width(title, size)
    p.text((ml + mr - w) / 2, y + 12, title, size, bold=True)
    y += size + rng.uniform(30, 45)
    bottom = p.H - rng.uniform(40, 90)
    top = y
    t = rng.uniform(1.0, 2.0)
    while y < bottom - 20:
        kind = rng.random()
        rh = rng.uniform(26, 44)
        if y + rh > bottom:
            break
        if kind < 0.12:  # shaded section header
            p.rect(ml, y, mr, y + rh * 0.7, fill=int(rng.integers(60, 150)))
            p.words(ml + 8, mr, y + rh * 0.2, rh * 0.3, fill=rng.uniform(0.2, 0.4), fill_px=255)
            y += rh * 0.7
            continue
        if kind < 0.3:  # checkbox row
            p.words(ml + 5, mr, y + 5, 5, fill=rng.uniform(0.15, 0.3))
            x = ml + 10
            while x < mr - 80:
                p.checkbox(x, y + rh * 0.45, 10)
                x = p.words(x + 16, x + rng.uniform(60, 130), y + rh * 0.45 + 2, 6) + 20
            p.hline(ml, mr, y + rh, t=t * 0.7)
            y += rh
            continue
        ncell = int(rng.integers(1, 5))
        cuts = np.sort(rng.uniform(0.15, 0.85, ncell - 1))
        xs = [ml] + list(ml + cuts * (mr - ml)) + [mr]
        for a, b in zip(xs[:-1], xs[1:]):
            p.vline(a, y, y + rh, t=t * 0.7)
            p.words(a + 4, b, y + 3, 4, fill=rng.uniform(0.15, 0.5))  # field label
            r = rng.random()
            if r < 0.35:
                p.words(a + 10, b - 5, y + rh * 0.5, rh * 0.28, fill=rng.uniform(0.3, 0.9))
            elif r < 0.5:
                p.scribble(a + 10, b - 5, y + rh * 0.35, rh * 0.45, t=1.6, word=(20, 60))
        p.hline(ml, mr, y + rh, t=t * 0.7)
        y += rh
    p.box(ml, top, mr, y, t=t * 1.5)
    if rng.random() < 0.5:
        p.words(ml, mr, y + 12, 4, fill=rng.uniform(0.4, 0.9))


def _email(p):
    rng = p.rng
    ml, mr = _margins(p, 45, 80)
    # printer/browser header line at the very top
    p.words(ml - 20, ml + rng.uniform(80, 150), 14, 4)
    p.words(mr - rng.uniform(60, 100), mr + 20, 14, 4)
    y = rng.uniform(45, 75)
    size = rng.uniform(11, 14)
    lh = size * rng.uniform(1.5, 1.8)
    if rng.random() < 0.5:  # Outlook style: sender name in bold, thick rule
        p.text(ml, y, _title(rng, (2, 2)), size * 1.6, bold=True)
        y += size * 2.4
        p.hline(ml, mr, y, t=3)
        y += lh
    labels = ["From:", "Sent:", "To:"] + (["Cc:"] if rng.random() < 0.5 else []) + ["Subject:"]
    if rng.random() < 0.3:
        labels.append("Attachments:")
    vx = ml + size * rng.uniform(6.5, 8.5)
    for lab in labels:
        p.text(ml, y, lab, size, bold=True)
        p.words(vx, mr, y + size * 0.2, size * 0.55, fill=rng.uniform(0.25, 0.7))
        y += lh
    y += lh * 0.5
    if rng.random() < 0.6:
        p.hline(ml, mr, y, t=1)
    y += lh
    blh = rng.uniform(13, 17)
    limit = p.H - rng.uniform(60, 300)
    for k in range(int(rng.integers(2, 7))):
        n = int(rng.integers(1, 6))
        if y + n * blh > limit:
            break
        y = p.para(ml, mr, y, n, blh, ragged=0.3) + blh
        if k == 1 and rng.random() < 0.35 and y < limit - 150:  # forwarded/original message
            p.text(ml, y, "-----Original Message-----", size)
            y += lh
            for lab in ("From:", "Sent:", "To:", "Subject:"):
                p.text(ml, y, lab, size, bold=True)
                p.words(vx, mr, y + size * 0.2, size * 0.55, fill=rng.uniform(0.25, 0.6))
                y += lh
            y += lh * 0.5
    p.words(ml - 20, ml + rng.uniform(100, 200), p.H - 22, 4)
    p.words(mr - 40, mr + 20, p.H - 22, 4)


def _handwritten(p):
    rng = p.rng
    ml, mr = _margins(p, 40, 90)
    pitch = rng.uniform(28, 46)
    y = rng.uniform(40, 110)
    if rng.random() < 0.5:  # ruled paper
        light = int(rng.integers(150, 210))
        for ry in np.arange(y + pitch * 0.8, p.H - 30, pitch):
            p.hline(10, p.W - 10, ry, t=1, fill=light)
        if rng.random() < 0.6:
            p.vline(ml - 12, 0, p.H, t=1.5, fill=light)
    if rng.random() < 0.5:  # date top right
        p.scribble(mr - rng.uniform(120, 180), mr, y - pitch * 0.2, pitch * 0.5, t=2, word=(30, 60))
        y += pitch * 1.5
    t = rng.uniform(1.6, 3.2)
    slant = rng.uniform(0.0, 0.6)
    n = int(rng.integers(10, 26))
    drift = rng.normal(0, 0.02)
    for i in range(n):
        if y > p.H - 60:
            break
        x0 = ml + (rng.uniform(20, 60) if rng.random() < 0.15 else rng.uniform(0, 12))
        x1 = mr - rng.uniform(0, 60) if rng.random() > 0.15 else ml + rng.uniform(100, 350)
        p.scribble(x0, x1, y + i * drift * 10, pitch * rng.uniform(0.4, 0.6), t=t, slant=slant)
        y += pitch * (2 if rng.random() < 0.1 else 1)
    if rng.random() < 0.5 and y < p.H - 100:
        p.signature(mr - rng.uniform(150, 220), y + pitch * 0.5, rng.uniform(110, 170), pitch)


def _advertisement(p):
    rng = p.rng
    m = rng.uniform(20, 60)
    W, H = p.W, p.H
    style = int(rng.integers(0, 3))
    if style == 0:  # photo on top, headline, copy
        ph = rng.uniform(0.35, 0.55) * H
        p.photo(m, m, W - m, m + ph)
        y = m + ph + rng.uniform(20, 40)
        size = rng.uniform(45, 75)
        p.text(m + 10, y, _title(rng, (1, 2)).upper(), size, bold=True)
        y += size * 1.4
        for _ in range(int(rng.integers(1, 3))):
            p.centered(W / 2, y, rng.uniform(0.5, 0.9) * (W - 2 * m), size * 0.45)
            y += size * 0.8
        y += 20
        while y < H - 120:
            y = p.para(m + 30, W / 2 - 15, y, 4, 14) + 10
        p.photo(W / 2 + 15, H - rng.uniform(260, 380), W - m - 10, H - 110)
    elif style == 1:  # dark background, white headline, product shot
        p.rect(0, 0, W, H, fill=int(rng.integers(20, 90)))
        size = rng.uniform(50, 85)
        y = rng.uniform(40, 120)
        for _ in range(int(rng.integers(1, 3))):
            p.text(m, y, _title(rng, (1, 1)).upper(), size, bold=True, fill=250)
            y += size * 1.2
        p.photo(m + 40, y + 20, W - m - 40, y + rng.uniform(250, 400), lo=100, hi=255)
        y = H - rng.uniform(180, 250)
        for _ in range(4):
            p.centered(W / 2, y, rng.uniform(200, 500), 9, shade=235)
            y += 22
    else:  # big headline, picture in the middle, coupon box
        size = rng.uniform(55, 90)
        y = rng.uniform(30, 70)
        p.rect(0, y - 10, W, y + size * 1.3, fill=int(rng.integers(10, 70)))
        p.text(m, y, _title(rng, (1, 2)).upper(), size, bold=True, fill=250)
        y += size * 1.3 + 30
        ph = rng.uniform(0.3, 0.45) * H
        p.photo(m, y, W - m, y + ph)
        y += ph + 25
        p.centered(W / 2, y, rng.uniform(300, 600), 22)
        y += 45
        for _ in range(3):
            p.centered(W / 2, y, rng.uniform(300, 550), 8)
            y += 18
        bx0, by0 = rng.uniform(m, W / 2), max(y + 20, H - rng.uniform(150, 200))
        for x in np.arange(bx0, W - m, 12):  # dashed coupon border
            p.hline(x, x + 6, by0, t=2)
            p.hline(x, x + 6, H - m, t=2)
        p.text(bx0 + 15, by0 + 15, "SAVE", rng.uniform(25, 40), bold=True)


def _sci_report(p):
    rng = p.rng
    ml, mr = _margins(p, 65, 100)
    cx = (ml + mr) / 2
    y = rng.uniform(50, 110)
    if rng.random() < 0.75:  # title block
        for _ in range(int(rng.integers(1, 3))):
            p.centered(cx, y, rng.uniform(250, 480), rng.uniform(11, 15))
            y += 28
        y += 8
        for _ in range(int(rng.integers(1, 4))):
            p.centered(cx, y, rng.uniform(120, 280), 6)
            y += 15
        y += 25
    lh = rng.uniform(12, 15)
    limit = p.H - 70
    sec = 1
    while y < limit - 3 * lh:
        if rng.random() < 0.3:  # numbered section heading
            p.text(ml, y - 2, f"{sec}.", lh * 0.85, bold=True)
            p.bar(ml + lh * 2, y, rng.uniform(80, 220), lh * 0.6)
            sec += 1
            y += lh * 2
        n = int(min(rng.integers(4, 13), (limit - y) // lh))
        if n < 1:
            break
        y = p.para(ml, mr, y, n, lh, lh * 0.5, indent=lh * 2) + lh * 0.6
    p.bar(cx - 6, p.H - 45, 12, 6)  # page number


def _sci_publication(p):
    rng = p.rng
    ml, mr = _margins(p, 40, 65)
    y = rng.uniform(25, 45)
    p.words(ml, ml + rng.uniform(150, 300), y, 4)
    p.bar(mr - 20, y, 20, 4)
    p.hline(ml, mr, y + 12, t=1)
    y += 30
    if rng.random() < 0.6:  # first page: title, authors, abstract
        for _ in range(int(rng.integers(1, 3))):
            p.centered((ml + mr) / 2, y, rng.uniform(350, mr - ml), rng.uniform(12, 16))
            y += 28
        p.centered((ml + mr) / 2, y, rng.uniform(200, 400), 6)
        y += 25
        y = p.para(ml + 40, mr - 40, y, int(rng.integers(5, 10)), 11, 5) + 20
    gutter = rng.uniform(18, 30)
    colw = (mr - ml - gutter) / 2
    lh = rng.uniform(10, 12.5)
    fig_col = int(rng.integers(0, 2))
    fig_h = rng.uniform(150, 260)
    fig_y = rng.uniform(y, max(y, p.H - 60 - fig_h - 35))
    wide_fig = rng.random() < 0.3
    if wide_fig:
        fig_col = 0
    bottom = p.H - 45
    for c in range(2):
        x0 = ml + c * (colw + gutter)
        x1 = x0 + colw
        has_fig = c == fig_col or wide_fig
        yy = y
        while True:
            stop = fig_y if has_fig else bottom
            if has_fig and yy + lh > fig_y:  # figure (and caption) here, text continues below
                if c == fig_col:
                    fx1 = mr if wide_fig else x1
                    _plot(p, x0, fig_y, fx1, fig_y + fig_h)
                    p.para(x0, fx1, fig_y + fig_h + 8, 2, 9, 4)
                yy = fig_y + fig_h + 35
                has_fig = False
                continue
            if yy + lh > stop:
                break
            if rng.random() < 0.08 and yy + 2.6 * lh < stop:
                p.bar(x0, yy, rng.uniform(60, 150), lh * 0.6)
                yy += lh * 1.6
            n = int(min(rng.integers(5, 16), (stop - yy) // lh))
            if n >= 1:
                yy = p.para(x0, x1, yy, n, lh, lh * 0.48, indent=lh)
            yy += lh * 0.3
    p.bar((ml + mr) / 2 - 5, p.H - 28, 10, 5)


def _plot(p, x0, y0, x1, y1):
    rng = p.rng
    p.box(x0, y0, x1, y1, t=1)
    ax, ay = x0 + 25, y1 - 20
    p.vline(ax, y0 + 10, ay, t=1.2)
    p.hline(ax, x1 - 10, ay, t=1.2)
    for _ in range(int(rng.integers(1, 4))):
        n = 12
        xs = np.linspace(ax + 5, x1 - 15, n)
        rise = np.cumsum(rng.uniform(-0.2, 1.0, n)) / n * (ay - y0 - 30) * rng.uniform(0.5, 1)
        ys = ay - 10 - rise
        pts = [(p._px(a), p._px(b)) for a, b in zip(xs, ys)]
        p.d.line(pts, fill=p.shade(), width=max(1, int(round(1.5 * p.u))))


def _specification(p):
    rng = p.rng
    ml, mr = _margins(p, 45, 80)
    y = rng.uniform(30, 60)
    p.text(ml, y, _title(rng, (1, 2)), rng.uniform(12, 16), bold=True)
    p.box(mr - 170, y - 5, mr, y + 40, t=1.5)
    p.words(mr - 165, mr - 5, y + 3, 5, fill=0.8)
    p.words(mr - 165, mr - 5, y + 20, 5, fill=0.6)
    y += 50
    p.hline(ml, mr, y, t=2.5)
    y += 15
    size = rng.uniform(16, 22)
    p.text(ml, y, "SPECIFICATION", size, bold=True)
    y += size + 25
    sec = int(rng.integers(1, 5))
    while y < p.H - 120:
        p.text(ml, y, f"{sec}.{int(rng.integers(0, 9))}", 11, bold=True)
        p.bar(ml + 45, y + 2, rng.uniform(80, 200), 7)
        y += 24
        if rng.random() < 0.4:
            y = p.para(ml + 45, mr, y, int(rng.integers(1, 4)), 13, 5.5) + 8
        rows = int(min(rng.integers(3, 14), (p.H - 60 - y) // 20))
        if rows < 2:
            break
        ncol = int(rng.integers(3, 7))
        cols = rng.uniform(0.6, 2.0, ncol)
        cols[0] *= 1.6
        rh = rng.uniform(16, 22)
        y = p.table(ml, y, mr, rows, rh, cols, grid=rng.random() < 0.5, header=True,
                    numeric=set(range(2, ncol)) if rng.random() < 0.5 else (),
                    frame=rng.uniform(1.5, 3)) + rng.uniform(20, 35)
        sec += 1
    p.hline(ml, mr, p.H - 50, t=1)
    p.words(ml, ml + 200, p.H - 40, 4)


def _file_folder(p):
    rng = p.rng
    W, H = p.W, p.H
    dark = int(rng.integers(15, 70))
    folder = int(rng.integers(150, 215))
    p.rect(0, 0, W, H, fill=dark)  # scanner lid around the folder
    mx0, mx1 = rng.uniform(10, 60), W - rng.uniform(10, 60)
    my1 = H - rng.uniform(10, 60)
    tab_h = rng.uniform(30, 60)
    my0 = rng.uniform(10, 50) + tab_h
    p.rect(mx0, my0, mx1, my1, fill=folder)
    tab_w = rng.uniform(0.25, 0.45) * (mx1 - mx0)
    tx = rng.uniform(mx0 + 20, mx1 - tab_w - 20) if rng.random() < 0.6 else mx0
    p.rect(tx, my0 - tab_h, tx + tab_w, my0 + 1, fill=folder)
    # label on the tab
    lx0, lx1 = tx + 10, tx + tab_w - 10
    p.rect(lx0, my0 - tab_h + 8, lx1, my0 - 4, fill=int(rng.integers(225, 255)))
    if rng.random() < 0.5:
        p.words(lx0 + 6, lx1 - 6, my0 - tab_h + 14, rng.uniform(6, 10), fill=rng.uniform(0.4, 0.9))
    else:
        p.scribble(lx0 + 6, lx1 - 6, my0 - tab_h + 10, tab_h * 0.45, word=(25, 70))
    # creases / inner border, maybe a sticker or a stamp
    if rng.random() < 0.7:
        p.box(mx0 + 15, my0 + 15, mx1 - 15, my1 - 15, t=rng.uniform(1, 3),
              fill=max(0, folder - int(rng.integers(30, 80))))
    if rng.random() < 0.5:
        cy = rng.uniform(my0 + 80, my1 - 80)
        p.hline(mx0, mx1, cy, t=2, fill=max(0, folder - 40))
    if rng.random() < 0.5:
        sx, sy = rng.uniform(mx0 + 60, mx1 - 250), rng.uniform(my0 + 60, my1 - 200)
        p.rect(sx, sy, sx + rng.uniform(120, 220), sy + rng.uniform(50, 120), fill=245)
        p.words(sx + 10, sx + 110, sy + 12, 8, fill=1.0)
    if rng.random() < 0.3:
        p.scribble(mx0 + rng.uniform(40, 200), mx1 - 100, rng.uniform(my0 + 100, my1 - 100), 25,
                   word=(40, 100))


def _news_article(p):
    rng = p.rng
    # often a clipping pasted on a white page
    if rng.random() < 0.5:
        x0, x1 = rng.uniform(20, 150), p.W - rng.uniform(20, 150)
        y0, y1 = rng.uniform(20, 150), p.H - rng.uniform(20, 250)
        if rng.random() < 0.5:
            p.box(x0 - 4, y0 - 4, x1 + 4, y1 + 4, t=1, fill=int(rng.integers(100, 200)))
    else:
        x0, x1 = rng.uniform(25, 50), p.W - rng.uniform(25, 50)
        y0, y1 = rng.uniform(20, 50), p.H - rng.uniform(20, 50)
    y = y0
    if rng.random() < 0.4:  # newspaper nameplate and date rule
        p.words(x0, x0 + rng.uniform(100, 250), y, 4)
        p.hline(x0, x1, y + 10, t=1)
        y += 20
    size = rng.uniform(28, 50)
    for _ in range(int(rng.integers(1, 3))):
        p.bar(x0, y, rng.uniform(0.55, 1.0) * (x1 - x0), size * 0.7)
        y += size
    if rng.random() < 0.6:
        p.bar(x0, y, rng.uniform(0.3, 0.7) * (x1 - x0), size * 0.35)
        y += size * 0.6
    y += 10
    ncol = int(rng.integers(3, 6))
    gutter = rng.uniform(10, 18)
    colw = (x1 - x0 - gutter * (ncol - 1)) / ncol
    lh = rng.uniform(9.5, 12)
    rules = rng.random() < 0.5
    photo_col = int(rng.integers(0, ncol))
    photo_span = min(int(rng.integers(1, 3)), ncol - photo_col)
    for c in range(ncol):
        cx0 = x0 + c * (colw + gutter)
        yy = y
        if c == photo_col and rng.random() < 0.7:
            ph = rng.uniform(120, 260)
            p.photo(cx0, yy, cx0 + photo_span * colw + (photo_span - 1) * gutter, yy + ph)
            p.para(cx0, cx0 + colw, yy + ph + 5, 2, 8, 4)
            yy += ph + 25
        elif photo_col < c < photo_col + photo_span and yy == y:
            yy += rng.uniform(120, 260) + 25
        bottom = y1 - rng.uniform(0, 80)
        n = int((bottom - yy) // lh)
        if n > 0:
            p.para(cx0, cx0 + colw, yy, n, lh, lh * 0.45)
        if rules and c > 0:
            p.vline(cx0 - gutter / 2, y, bottom, t=0.8)


def _budget(p):
    rng = p.rng
    ml, mr = _margins(p, 30, 60)
    cx = (ml + mr) / 2
    y = rng.uniform(35, 70)
    for _ in range(int(rng.integers(2, 4))):
        p.centered(cx, y, rng.uniform(150, 330), 7)
        y += 17
    y += 20
    ncol = int(rng.integers(5, 11))
    label_w = rng.uniform(150, 250)
    colw = (mr - ml - label_w) / ncol
    # column headings (two rows of short bars) and rule
    for r in range(2):
        for c in range(ncol):
            w = rng.uniform(0.4, 0.85) * colw
            p.bar(ml + label_w + (c + 1) * colw - w - 4, y + r * 12, w, 5)
    y += 30
    p.hline(ml, mr, y, t=1.5)
    if rng.random() < 0.4:
        p.hline(ml, mr, y + 3, t=1)
    y += 10
    lh = rng.uniform(13, 17)
    grid = rng.random() < 0.3
    top = y
    while y < p.H - 70:
        r = rng.random()
        if r < 0.1:  # subtotal row: rule above, bold numbers
            for c in range(ncol):
                p.hline(ml + label_w + c * colw + colw * 0.3, ml + label_w + (c + 1) * colw - 4,
                        y - 2, t=1)
        if r < 0.15:
            y += lh * 0.3
        indent = 15 if rng.random() < 0.5 else 0
        p.words(ml + indent, ml + label_w - 10, y, lh * 0.45, fill=rng.uniform(0.3, 1.0))
        for c in range(ncol):
            if rng.random() < 0.07:
                continue
            w = rng.integers(2, 8) * 5.5 * min(1.0, colw / 60)
            p.bar(ml + label_w + (c + 1) * colw - w - 4, y, w, lh * 0.45)
        y += lh
    if grid:
        for c in range(ncol + 1):
            p.vline(ml + label_w + c * colw, top - 40, y, t=0.8)
    p.hline(ml + label_w, mr, y + 2, t=1)
    p.hline(ml + label_w, mr, y + 6, t=1)


def _invoice(p):
    rng = p.rng
    ml, mr = _margins(p, 40, 70)
    y = rng.uniform(35, 60)
    s = rng.uniform(35, 60)
    p.rect(ml, y, ml + s, y + s, fill=p.shade())
    p.text(ml + s + 10, y, _title(rng, (1, 2)), rng.uniform(14, 20), bold=True)
    p.words(ml + s + 10, ml + s + 200, y + 28, 5)
    p.words(ml + s + 10, ml + s + 170, y + 40, 5)
    size = rng.uniform(28, 42)
    w = p.text_width("INVOICE", size)
    p.text(mr - w - 5, y, "INVOICE", size, bold=True)
    y2 = y + size + 15
    for lab in ("No.", "Date", "Terms"):  # number / date block
        p.text(mr - 200, y2, lab, 10, bold=True)
        p.words(mr - 120, mr, y2 + 2, 5, fill=rng.uniform(0.4, 0.9))
        y2 += 16
    y = max(y + s, y2) + rng.uniform(25, 45)
    # bill to / ship to
    boxes = rng.random() < 0.5
    for k, bx in enumerate((ml, (ml + mr) / 2 + 10)):
        if k == 1 and rng.random() < 0.3:
            continue
        p.text(bx, y, "BILL TO" if k == 0 else "SHIP TO", 10, bold=True)
        yy = y + 18
        for _ in range(int(rng.integers(3, 6))):
            p.words(bx + 5, bx + rng.uniform(120, 230), yy, 5.5)
            yy += 14
        if boxes:
            p.box(bx - 5, y - 6, bx + (mr - ml) / 2 - 20, y + 95, t=1)
    y += 120
    # item table
    rows = int(rng.integers(6, 18))
    rh = rng.uniform(18, 24)
    rows = int(min(rows, (p.H - 260 - y) // rh))
    cols = [0.6, 3.5, 1.0, 1.0] if rng.random() < 0.5 else [1.0, 3.0, 0.7, 1.0, 1.1]
    hf = int(rng.integers(40, 140)) if rng.random() < 0.6 else None
    y = p.table(ml, y, mr, max(rows, 3), rh, cols, grid=rng.random() < 0.6, header=True,
                numeric={len(cols) - 2, len(cols) - 1}, header_fill=hf)
    # totals box
    bx0 = mr - rng.uniform(200, 260)
    by = y + 15
    for lab in ("Subtotal", "Tax", "TOTAL"):
        p.text(bx0 + 8, by + 4, lab, 11, bold=lab == "TOTAL")
        w = 70.0 if lab == "TOTAL" else rng.uniform(40, 70)
        p.bar(mr - 8 - w, by + 6, w, 6)
        by += 22
    p.box(bx0, y + 15, mr, by + 4, t=1.5)
    p.hline(bx0, mr, by - 22, t=1.2)
    # footer
    p.centered((ml + mr) / 2, p.H - rng.uniform(50, 90), rng.uniform(200, 400), 5)


def _presentation(p):
    rng = p.rng
    W, H = p.W, p.H
    if W < H:  # portrait page holding one slide (handout)
        sx0, sx1 = 60, W - 60
        sy0 = rng.uniform(60, 120)
        sy1 = sy0 + (sx1 - sx0) * 0.75
        p.box(sx0, sy0, sx1, sy1, t=2)
        for k in range(int(rng.integers(0, 6))):  # note lines under the slide
            p.hline(sx0, sx1, sy1 + 60 + k * 40, t=1, fill=160)
    else:
        sx0, sx1, sy0, sy1 = 0, W, 0, H
        if rng.random() < 0.5:
            sx0, sx1, sy0, sy1 = 25, W - 25, 25, H - 25
            p.box(sx0, sy0, sx1, sy1, t=rng.uniform(2, 6))
    sw, sh = sx1 - sx0, sy1 - sy0
    k = sw / 1000  # slide scale
    y = sy0 + sh * rng.uniform(0.06, 0.1)
    size = rng.uniform(45, 70) * k
    if rng.random() < 0.4:  # title band
        p.rect(sx0, y - size * 0.3, sx1, y + size * 1.4, fill=int(rng.integers(30, 110)))
        p.text(sx0 + 50 * k, y, _title(rng, (1, 3)), size, bold=True, fill=245)
    else:
        t = _title(rng, (1, 3))
        tw = p.text_width(t, size)
        x = sx0 + (sw - tw) / 2 if rng.random() < 0.5 else sx0 + 60 * k
        p.text(x, y, t, size, bold=True)
    y += size * 1.4 + sh * 0.06
    lh = sh * rng.uniform(0.09, 0.13)
    th = lh * rng.uniform(0.25, 0.35)
    chart = rng.random() < 0.3
    right = sx0 + sw * (0.55 if chart else 0.92)
    for _ in range(int(rng.integers(3, 7))):
        if y > sy1 - lh:
            break
        sub = rng.random() < 0.25
        bx = sx0 + (130 if sub else 70) * k
        p.bullet(bx, y + th / 2, th * (0.25 if sub else 0.35))
        p.words(bx + th * 1.2, right, y, th * (0.8 if sub else 1.0), fill=rng.uniform(0.4, 1.0))
        y += lh
    if chart:  # bar chart on the right
        cx0, cx1 = sx0 + sw * 0.6, sx1 - 40 * k
        cy1 = sy1 - sh * 0.12
        cy0 = sy0 + sh * 0.35
        p.hline(cx0, cx1, cy1, t=2)
        p.vline(cx0, cy0, cy1, t=2)
        n = int(rng.integers(3, 7))
        bw = (cx1 - cx0) / n
        for i in range(n):
            bh = rng.uniform(0.2, 1.0) * (cy1 - cy0)
            p.rect(cx0 + i * bw + bw * 0.2, cy1 - bh, cx0 + (i + 0.8) * bw, cy1,
                   fill=int(rng.integers(40, 180)))
    p.bar(sx1 - 60 * k, sy1 - 30 * k, 25 * k, 10 * k)  # slide number


def _questionnaire(p):
    rng = p.rng
    ml, mr = _margins(p, 50, 90)
    cx = (ml + mr) / 2
    y = rng.uniform(35, 70)
    t = _title(rng, (1, 2)).upper() + " QUESTIONNAIRE"
    size = rng.uniform(14, 20)
    tw = p.text_width(t, size)
    p.text(cx - tw / 2, y, t, size, bold=True)
    y += size + 20
    y = p.para(ml, mr, y, int(rng.integers(1, 4)), 13, 5) + 15
    q = int(rng.integers(1, 20))
    while y < p.H - 110:
        p.text(ml, y - 2, f"{q}.", 12, bold=True)
        y = p.para(ml + 25, mr, y, int(rng.integers(1, 3)), 14, 6) + 6
        kind = rng.random()
        s = rng.uniform(9, 13)
        if kind < 0.4:  # options in a row
            x = ml + 30
            for _ in range(int(rng.integers(2, 6))):
                if x > mr - 100:
                    break
                p.checkbox(x, y, s)
                x = p.words(x + s + 6, x + s + rng.uniform(40, 110), y + s * 0.2, s * 0.6) + 25
            y += s + 20
        elif kind < 0.75:  # vertical list of options
            for _ in range(int(rng.integers(2, 6))):
                p.checkbox(ml + 30, y, s)
                p.words(ml + 30 + s + 8, ml + rng.uniform(150, 350), y + s * 0.2, s * 0.6)
                y += s + 9
            y += 12
        elif kind < 0.9:  # rating scale 1..5
            x = ml + 60
            p.words(ml + 30, ml + 55, y + 2, 5, fill=1.0)
            for i in range(int(rng.integers(4, 8))):
                p.box(x, y, x + 2 * s, y + 2 * s, t=1)
                p.text(x + s * 0.6, y + s * 0.4, str(i + 1), s, fill=p.shade())
                x += 2 * s + 12
            y += 2 * s + 20
        else:  # answer lines
            for _ in range(int(rng.integers(1, 4))):
                p.hline(ml + 30, mr, y + 12, t=0.8)
                y += 22
            y += 12
        q += 1


def _resume(p):
    rng = p.rng
    ml, mr = _margins(p, 55, 95)
    cx = (ml + mr) / 2
    y = rng.uniform(40, 80)
    size = rng.uniform(22, 34)
    name = _title(rng, (2, 2)).upper()
    centered = rng.random() < 0.6
    if centered:
        w = p.text_width(name, size)
        p.text(cx - w / 2, y, name, size, bold=True)
        y += size * 1.35
        for _ in range(int(rng.integers(1, 3))):
            p.centered(cx, y, rng.uniform(200, 400), 5)
            y += 13
    else:
        p.text(ml, y, name, size, bold=True)
        y += size * 1.35
        for _ in range(int(rng.integers(1, 4))):
            p.words(ml, ml + rng.uniform(150, 250), y, 5)
            y += 13
    y += 8
    if rng.random() < 0.7:
        p.hline(ml, mr, y, t=rng.uniform(1, 3))
    y += 22
    date_col = rng.random() < 0.6
    tx = ml + (rng.uniform(110, 150) if date_col else 20)
    sections = ["OBJECTIVE", "EDUCATION", "EXPERIENCE", "SKILLS", "PUBLICATIONS", "REFERENCES"]
    lh = rng.uniform(13, 16)
    for sec in sections[int(rng.integers(0, 2)):]:
        if y > p.H - 90:
            break
        p.text(ml, y, sec, rng.uniform(11, 14), bold=True)
        y += 18
        if rng.random() < 0.5:
            p.hline(ml, mr, y - 3, t=1)
        y += 6
        for _ in range(int(rng.integers(1, 4))):
            if y > p.H - 70:
                break
            if date_col:
                p.words(ml, ml + rng.uniform(50, 90), y, lh * 0.45)
            p.words(tx, tx + rng.uniform(150, 300), y, lh * 0.45)
            y += lh
            for _ in range(int(rng.integers(0, 4))):
                p.bullet(tx + 6, y + lh * 0.22, 2)
                p.words(tx + 15, tx + 15 + rng.uniform(120, mr - tx - 40), y, lh * 0.45)
                y += lh
            y += lh * 0.6
        y += 10


def _memo(p):
    rng = p.rng
    ml, mr = _margins(p, 65, 100)
    y = rng.uniform(35, 70)
    if rng.random() < 0.4:
        p.words(ml, ml + rng.uniform(150, 260), y, 6)
        y += 25
    size = rng.uniform(24, 38)
    word = "MEMORANDUM" if rng.random() < 0.8 else "M E M O R A N D U M"
    w = p.text_width(word, size)
    x = (ml + mr - w) / 2 if rng.random() < 0.5 else ml
    p.text(x, y, word, size, bold=True)
    y += size * 1.5 + rng.uniform(10, 30)
    lsize = rng.uniform(12, 15)
    pitch = rng.uniform(26, 36)
    labels = ["TO:", "FROM:", "DATE:", "SUBJECT:"] if rng.random() < 0.6 else \
        ["DATE:", "TO:", "FROM:", "RE:"]
    if rng.random() < 0.4:
        labels.insert(2, "CC:")
    vx = ml + lsize * rng.uniform(7, 9)
    for lab in labels:
        p.text(ml, y, lab, lsize, bold=True)
        p.words(vx, mr, y + lsize * 0.25, lsize * 0.55, fill=rng.uniform(0.2, 0.6))
        y += pitch
    y += 4
    p.hline(ml, mr, y, t=rng.uniform(1.5, 4))
    y += rng.uniform(30, 45)
    lh = rng.uniform(14, 18)
    limit = p.H - rng.uniform(60, 160)
    for _ in range(int(rng.integers(2, 7))):
        n = int(min(rng.integers(2, 8), (limit - y) // lh))
        if n < 1:
            break
        y = p.para(ml, mr, y, n, lh, lh * 0.5, indent=lh * 3 if rng.random() < 0.3 else 0) + lh
    if rng.random() < 0.5 and y < p.H - 80:
        p.words(ml, ml + 30, y + 10, 6)  # initials / enclosures


LAYOUTS = (_letter, _form, _email, _handwritten, _advertisement, _sci_report, _sci_publication,
           _specification, _file_folder, _news_article, _budget, _invoice, _presentation,
           _questionnaire, _resume, _memo)
assert len(LAYOUTS) == NUM_CLASSES


def page_size(class_id, rng, max_side):
    """(width, height) in pixels: portrait, presentations mostly landscape slides."""
    if class_id == _PRESENTATION and rng.random() < 0.6:  # landscape slide
        return max_side, int(round(max_side * rng.uniform(0.70, 0.78)))
    return int(round(max_side * rng.uniform(0.72, 0.80))), max_side
