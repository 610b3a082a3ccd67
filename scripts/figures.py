"""
figures.py: pictures of what the project measured, drawn as SVG by this file (no plotting library).
Each figure's numbers are written beside it, same stem: FIGURE.json (with the choices below) and
FIGURE.csv (one row per plotted value).

Why no plotting library: the figures are four simple charts, and drawing them here keeps them
testable without one (tests/test_figures.py checks what each SVG holds, with torch and numpy only)
and byte-stable across machines. Text is laid out from CHAR_WIDTHS, DejaVu Sans's advance widths
rounded up, so an estimate is never short of the rendered text: titles and subtitles wrap to fit
the canvas, and the tests check every text's box lies inside it.

    python scripts/figures.py accuracy RUN_DIR [RUN_DIR ...] --out docs/figures/accuracy.svg
    python scripts/figures.py steptime BENCH.json --out docs/figures/steptime.svg
    python scripts/figures.py peft PEFT_BENCH.json [PEFT_BENCH.json ...] --out docs/figures/peft.svg
    python scripts/figures.py loss RUN_DIR [RUN_DIR ...] --out docs/figures/loss.svg
    python scripts/figures.py locations --out docs/figures/locations.svg

accuracy   One mark per method: the best dev value of the task's main metric (results.json's `best`,
           x 100: the best evaluation of the run, as the papers report their tables), mean and sample
           standard deviation over the runs (seeds) as an error bar, against the trainable parameters
           outside the classification head (`trainable_parameters.adapter`: LoCA's coefficients only,
           its locations being frozen after the search, as the papers count) on a log axis. `head` runs
           (head only) and `full` runs (full fine-tuning) are horizontal lines, labelled with their value.
           All runs must share task and model. A method run with several sizes gives one mark per size.
steptime   From `bench.py --json` (whole steps, not --per-layer): per row, the eager step (--eager) and
           the default step (mode 'graph': CUDA graphs after compiling), both divided by ONE unit, the
           floor row's default step (frozen backbone, trainable head, gradient to the embeddings), so
           that the bars compare across modes too. A file without graph steps (CPU, fp16) is drawn
           eager only, divided by the floor's eager step, and says so.
peft       From `scripts/peft_bench.py --json` files (a row in a later file replaces the same row of an earlier
           one): per method PEFT shares with us, and the floor, four bars on one log axis of ms: our step as a
           short run takes it (CUDA graphs alone), as a long run takes it (each layer compiled), PEFT's
           whole model under torch.compile(mode="reduce-overhead"), PEFT eager. Each bar is the median step
           timed alone; its label adds the steps in a row ("loop"). A row that failed or did not run is named.
loss       Training loss against step from each run's log.jsonl: every line with a numeric "loss" (the
           --log-every lines, or the evaluation lines of a log without them).
           One line per method: the mean over its runs (seeds) at the steps every one of them logged.
           --log-y puts the loss on a log axis.
locations  Why locations matter (LoCA, Du et al. ICLR 2025, §3 and Appendix G, numerically). ΔW is d x d
           with iid N(0, 1) entries; the relative error ‖ΔW − ΔŴ‖_F / ‖ΔW‖_F of the best approximation
           each family allows, at an equal parameter budget B:
             best rank r         truncated SVD (Eckart-Young); r(2d) values (LoRA's B and A)      r = B/2d
             DCT, random         n orthonormal 2-D DCT-II coefficients at seeded random locations
                                 (randperm, as FourierFT draws them); only the seed is stored      n = B
             DFT real, random    FourierFT's own family, ΔW = Re(IDFT2(F)) with F real at n seeded
                                 random locations; the least-squares coefficients (what training
                                 the spectrum on a squared loss converges to); seed stored         n = B
             DCT, largest |c|    the n largest-magnitude DCT coefficients: the oracle LoCA's
                                 location search moves towards; each learnt location is stored as
                                 two indices (row, column), so n values + 2n indices              n = ⌊B/3⌋
             (same, dotted)      locations not counted, as the papers' parameter tables count LoCA n = B
           Two indices per location is this script's choice, the conservative one (the paper's
           Appendix G was not at hand to settle it): a location packed as one flat index would cost
           n + n and move the solid LoCA curve left by a factor 3/2; the dotted curve is the other end.
           With the orthonormal DCT (spectral_ft.dct_matrix) every DCT error is exact by Parseval:
           the error² is the energy of the coefficients left out. The rank-r error² is the sum of the
           squared singular values past r. Budgets run from rank 1 to rank d/4 (B = d²/2): at B = d²
           random locations would hold every coefficient. --sizes (default 128,768) gives one panel
           per d, --seeds (default 5) the matrices per d; the curves are means (the caption gives the
           largest standard deviation over seeds, too small to draw).
"""
import argparse
import csv
import io
import json
import math
import statistics
import sys
from pathlib import Path
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

import spectral_ft  # noqa: E402
from encoder.hub import atomic_write  # noqa: E402
from encoder.model import KNOWN_CONFIGS  # noqa: E402

WIDTH = 720
MARGIN = 12  # px kept free at the canvas's left and right edges
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
INK, MUTED, GRID = "#222222", "#666666", "#e4e4e4"
# One colour per method in every figure (Okabe-Ito where it reaches, then distinct extras).
COLORS = {"lora": "#0072B2", "vera": "#56B4E9", "fourierft": "#E69F00", "fora": "#8C564B", "dfora": "#CC79A7",
          "loca": "#D55E00", "foura": "#009E73", "spectral_a": "#6A3D9A", "spectral_r": "#E7298A",
          "dora": "#332288", "oft": "#882255", "bitfit": "#A6761D", "masked_lora": "#66A61E",
          "floor": "#444444", "head": "#777777", "full": "#111111"}
EXTRA_COLORS = ["#1B9E77", "#7570B3", "#44AA99", "#666666"]
HALO = dict(stroke="white", stroke_width=3, stroke_linejoin="round", paint_order="stroke")  # text readable over lines


class InputError(Exception):
    """Bad input: printed as one line `figures.py: error: ...`, exit status 2."""


def color_of(method):
    if method in COLORS:
        return COLORS[method]
    return EXTRA_COLORS[sum(map(ord, method)) % len(EXTRA_COLORS)]


# -----------------------------------------------------------------------------
# SVG: a list of elements, and scales from data to pixels


class Svg:
    """An SVG document built element by element; str(svg) is the file. Attribute names are
    Python names: class_ -> class, stroke_width -> stroke-width, data_method -> data-method."""

    def __init__(self, width, height):
        self.width, self.height, self.parts = width, height, []

    @staticmethod
    def _attributes(attributes):
        def value(v):
            return f"{v:.1f}" if isinstance(v, float) else str(v)
        return "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(value(v), {chr(34): "&quot;"})}"'
                       for k, v in attributes.items() if v is not None)

    def add(self, tag, text=None, **attributes):
        attrs = self._attributes(attributes)
        self.parts.append(f"<{tag}{attrs}/>" if text is None else f"<{tag}{attrs}>{escape(str(text))}</{tag}>")

    def open(self, tag, **attributes):
        self.parts.append(f"<{tag}{self._attributes(attributes)}>")

    def close(self, tag):
        self.parts.append(f"</{tag}>")

    def text(self, x, y, text, size=12, anchor="start", color=INK, **attributes):
        self.add("text", text, x=float(x), y=float(y), font_size=size, text_anchor=anchor, fill=color, **attributes)

    def line(self, x1, y1, x2, y2, color=INK, width=1, **attributes):
        self.add("line", x1=float(x1), y1=float(y1), x2=float(x2), y2=float(y2), stroke=color, stroke_width=width,
                 **attributes)

    def __str__(self):
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
                f'viewBox="0 0 {self.width} {self.height}" font-family="{FONT}">')
        background = f'<rect width="{self.width}" height="{self.height}" fill="white"/>'
        return "\n".join([head, background, *self.parts, "</svg>"]) + "\n"


# Advance widths in em of DejaVu Sans (the first font asked for, and the widest of them: Helvetica and
# Arial are narrower), read from the font's hmtx table and rounded UP to 0.1 em, so that an estimate
# is never short of the rendered text. A character not listed counts 1.2 em (wider than any listed).
CHAR_WIDTHS = {
    False: {0.3: "'IJijl", 0.4: " (),-./:;[\\]ft|·⌊⌋", 0.5: '!"*_`r²–‖', 0.6: "?FLcksvxyz",
            0.7: "$0123456789ABCEKPRSTVXYZabdeghnopqu{}Δ", 0.8: "&DGHNOQU▲▼", 0.9: "#+<=>M^w~±×÷−",
            1.0: "%@WmŴ"},
    True: {0.4: " ',./:;IJ\\ijl|·", 0.5: "!()-[]_`frt²–‖⌊⌋", 0.6: '"*?csz', 0.7: "$0123456789EFLTaekovxy",
           0.8: "ABCKPRSVXYZbdghnpqu{}Δ▲▼", 0.9: "#&+<=>DGHNOQU^~±×÷−", 1.0: "@Mw", 1.1: "%m", 1.2: "WŴ"},
}
EM = {bold: {ch: em for em, chars in table.items() for ch in chars} for bold, table in CHAR_WIDTHS.items()}


def text_width(text, size, bold=False):
    """Width in pixels of `text` at font size `size`, estimated from above (CHAR_WIDTHS)."""
    return size * sum(EM[bold].get(ch, 1.2) for ch in text)


def wrap(text, size, width, bold=False):
    """`text` cut at spaces into as few lines as fit `width` pixels each (a single longer word is
    its own line), of even lengths: the narrowest width that needs no more lines is used."""
    def greedy(limit):
        lines = []
        for word in text.split(" "):
            if lines and text_width(f"{lines[-1]} {word}", size, bold) <= limit:
                lines[-1] = f"{lines[-1]} {word}"
            else:
                lines.append(word)
        return lines
    fewest = len(greedy(width))
    limit = text_width(text, size, bold) / fewest
    while len(greedy(limit)) > fewest:
        limit += size / 2
    return greedy(limit)


class Scale:
    """Data -> pixels along one axis: [low, high] onto [start, end], linearly or in log10."""

    def __init__(self, low, high, start, end, log=False):
        self.low, self.high, self.start, self.end, self.log = low, high, start, end, log

    def __call__(self, value):
        f = math.log10 if self.log else (lambda v: v)
        return self.start + (f(value) - f(self.low)) / (f(self.high) - f(self.low)) * (self.end - self.start)

    def ticks(self):
        """(major ticks, labelled; minor ticks) inside [low, high]."""
        return log_ticks(self.low, self.high) if self.log else (linear_ticks(self.low, self.high), [])


def nice_step(span, count=5):
    """A step of 1, 2 or 5 times a power of ten that cuts `span` into about `count` pieces."""
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def nice_range(low, high, count=5):
    """[low, high] widened to multiples of a nice step, the step linear_ticks then takes for it."""
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    for _ in range(4):  # widening can make the span call for a coarser step: widen again to that one
        step = nice_step(high - low, count)
        low, high = math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step
        if nice_step(high - low, count) == step:
            break
    return low, high


def linear_ticks(low, high, count=5):
    step = nice_step(high - low, count)
    first = math.ceil(low / step - 1e-9)
    return [round(k * step, 12) for k in range(first, int(math.floor(high / step + 1e-9)) + 1)]


def log_ticks(low, high):
    """Decades as majors and 2..9 times a decade as minors; where fewer than two decades show,
    2 and 5 times a decade become majors too (so that the axis has labels)."""
    majors, minors = [], []
    for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for m in range(1, 10):
            v = m * 10.0 ** e
            if low * (1 - 1e-9) <= v <= high * (1 + 1e-9):
                (majors if m == 1 else minors).append(v)
    if len(majors) < 2:
        majors = sorted(majors + [v for v in minors if round(v / 10 ** math.floor(math.log10(v))) in (2, 5)])
        minors = [v for v in minors if v not in majors]
    return majors, minors


def log_range(low, high, margin=1.3):
    """[low, high] (positive) widened by a factor `margin` at each end, and to at least a decade."""
    low, high = low / margin, high * margin
    if high / low < 10:
        middle = math.sqrt(low * high)
        low, high = middle / math.sqrt(10), middle * math.sqrt(10)
    return low, high


def si(value):
    """1500 -> '1.5k', 24000 -> '24k', 1.25e8 -> '125M'; below 1000 as is."""
    for power, suffix in ((9, "G"), (6, "M"), (3, "k")):
        if abs(value) >= 10 ** power:
            return f"{value / 10 ** power:.3g}{suffix}"
    return f"{value:.3g}"


def tick_label(value, scale):
    if scale.log:
        return si(value)
    step = nice_step(scale.high - scale.low)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


def draw_axes(svg, x, y, x_label, y_label, y_ticks=True):
    """Grid, frame, ticks (minor ones short), tick labels and axis labels of the plot box x × y
    (y_ticks False: the y axis is categories, labelled by the caller)."""
    left, right, bottom, top = x.start, x.end, y.start, y.end
    x_major, x_minor = x.ticks()
    y_major, y_minor = y.ticks() if y_ticks else ([], [])
    svg.open("g", class_="grid")
    for v in x_major:
        svg.line(x(v), bottom, x(v), top, GRID)
    for v in y_major:
        svg.line(left, y(v), right, y(v), GRID)
    svg.close("g")
    svg.add("rect", x=float(left), y=float(top), width=float(right - left), height=float(bottom - top), fill="none",
            stroke=MUTED, stroke_width=1)
    svg.open("g", class_="ticks")
    for v in x_major:
        svg.line(x(v), bottom, x(v), bottom + 6, MUTED)
        svg.text(x(v), bottom + 20, tick_label(v, x), 12, "middle", MUTED)
    for v in x_minor:
        svg.line(x(v), bottom, x(v), bottom + 3, MUTED)
    for v in y_major:
        svg.line(left - 6, y(v), left, y(v), MUTED)
        svg.text(left - 9, y(v) + 4, tick_label(v, y), 12, "end", MUTED)
    for v in y_minor:
        svg.line(left - 3, y(v), left, y(v), MUTED)
    svg.close("g")
    if x_label:
        svg.text((left + right) / 2, bottom + 42, x_label, 13, "middle", class_="axis-label x")
    middle = (top + bottom) / 2
    if y_label:
        svg.text(left - 52, middle, y_label, 13, "middle", class_="axis-label y",
                 transform=f"rotate(-90 {left - 52:.1f} {middle:.1f})")


def draw_title(svg, title, *subtitles):
    """The title (bold, 15 px) and subtitles (11.5 px), centred, each wrapped to fit the canvas with a
    margin of MARGIN px at both ends. Returns the baseline of the last line: the figure goes below."""
    y = 26
    for k, line in enumerate(wrap(title, 15, WIDTH - 2 * MARGIN, bold=True)):
        y = 26 + 19 * k
        svg.text(WIDTH / 2, y, line, 15, "middle", font_weight="bold", class_="title")
    y += 3
    for subtitle in subtitles:
        for line in wrap(subtitle, 11.5, WIDTH - 2 * MARGIN):
            y += 16
            svg.text(WIDTH / 2, y, line, 11.5, "middle", MUTED, class_="subtitle")
    return y


class LabelPlacer:
    """Direct labels beside points: each goes to the first of a few spots around its point that
    stays inside the plot box and overlaps no label or mark placed before (else the least bad)."""

    def __init__(self, box):
        self.box, self.taken = box, []  # box: (left, top, right, bottom)

    def reserve(self, left, top, right, bottom):
        self.taken.append((left, top, right, bottom))

    def _overlap(self, a):
        area = 0.0
        for b in self.taken:
            w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
            area += max(w, 0) * max(h, 0)
        left, top, right, bottom = self.box
        outside = max(left - a[0], 0) + max(a[2] - right, 0) + max(top - a[1], 0) + max(a[3] - bottom, 0)
        return area + 1e4 * outside

    def place(self, svg, x, y, text, size=12, color=INK, gap=7):
        w, h = text_width(text, size), size
        corners = [(x + gap, y - h / 2), (x - gap - w, y - h / 2), (x - w / 2, y - gap - h), (x - w / 2, y + gap),
                   (x + gap, y - gap - h), (x + gap, y + gap), (x - gap - w, y - gap - h), (x - gap - w, y + gap)]
        boxes = [(sx, sy, sx + w, sy + h) for sx, sy in corners]  # (left, top, right, bottom)
        best = min(range(len(boxes)), key=lambda i: (self._overlap(boxes[i]), i))
        self.reserve(*boxes[best])
        sx, sy = boxes[best][0], boxes[best][1]
        svg.text(sx, sy + 0.8 * h, text, size, "start", color, class_="label", **HALO)


# -----------------------------------------------------------------------------
# Reading what the project wrote: run folders (results.json, log.jsonl) and bench.py --json


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not JSON ({e})") from None


def lookup(data, keys, path, kinds=(int, float)):
    """data[keys[0]][keys[1]]..., checked to be one of `kinds` (a bool is not a number here)."""
    value = data
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            where = "".join(f"[{k!r}]" for k in keys[:depth + 1])
            raise InputError(f"{path}: has no {where}; is it a results.json written by train.py?")
        value = value[key]
    numeric = kinds == (int, float)
    wrong_type = not isinstance(value, kinds) or isinstance(value, bool)
    if wrong_type or numeric and not math.isfinite(value):
        where = "".join(f"[{k!r}]" for k in keys)
        expected = "a finite number" if numeric else kinds[0].__name__
        raise InputError(f"{path}: {where} is {value!r}, expected {expected}")
    return value


def read_run(folder):
    """One run folder -> the few numbers the figures use (checked): method, task, model, seed,
    best dev value of the main metric, trainable parameters outside the head."""
    path = Path(folder) / "results.json"
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: not a folder (give run folders, each with a results.json)")
    if not path.is_file():
        raise InputError(f"{folder}: no results.json there (train.py writes it when a run finishes)")
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a results.json written by train.py (not a JSON object)")
    if data.get("best") is None and isinstance(data.get("config"), dict):
        raise InputError(f"{path}: 'best' is null (no evaluation gave a number), nothing to plot")
    text = lambda *keys: lookup(data, list(keys), path, (str,))
    return dict(folder=str(folder), method=text("config", "method"), task=text("config", "task"),
                model=text("config", "model"), seed=lookup(data, ["config", "seed"], path, (int,)),
                metric=text("main_metric"), value=lookup(data, ["best", "value"], path),
                parameters=lookup(data, ["trainable_parameters", "adapter"], path),
                hyperparameters=data["config"].get("hyperparameters") or {})


def read_runs(folders):
    """Every folder's run; all must share task and model (one figure compares methods on one task)."""
    runs = [read_run(folder) for folder in folders]
    first = runs[0]
    for run in runs[1:]:
        for key in ("task", "model", "metric"):
            if run[key] != first[key]:
                raise InputError(f"{run['folder']}: {key} {run[key]!r}, but {first['folder']} has {first[key]!r}; "
                                 f"one figure shows one task on one model")
    return runs


def mean_std(values):
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def accuracy_groups(runs):
    """Runs -> (marks, references). A mark per (method, parameter count): mean ± std over its runs
    of the best dev value × 100. References: `head` and `full`, drawn as lines."""
    groups = {}
    for run in runs:
        groups.setdefault((run["method"], run["parameters"]), []).append(run)
    sizes = {}
    for method, parameters in groups:
        sizes.setdefault(method, []).append(parameters)
    marks, references = [], []
    for (method, parameters), members in groups.items():
        mean, std = mean_std([100 * r["value"] for r in members])
        label = method if len(sizes[method]) == 1 else f"{method} {hyperparameter_text(members[0], groups, method)}"
        entry = dict(method=method, label=label, parameters=parameters, mean=mean, std=std, runs=len(members),
                     seeds=sorted(r["seed"] for r in members), folders=[r["folder"] for r in members])
        (references if method in ("head", "full") else marks).append(entry)
    return sorted(marks, key=lambda m: (m["parameters"], m["method"])), references


def hyperparameter_text(run, groups, method):
    """The hyperparameters that tell this method's runs of different sizes apart, e.g. 'r=16'."""
    others = [members[0]["hyperparameters"] for (m, _), members in groups.items() if m == method]
    differing = [k for k, v in run["hyperparameters"].items() if any(o.get(k) != v for o in others)]
    return ",".join(f"{k}={run['hyperparameters'][k]}" for k in differing) or f"({si(run['parameters'])})"


def read_log(folder):
    """log.jsonl -> {step: loss}: the --log-every lines (each the mean loss of its window), or, in a log
    that has none (runs before --log-every), the evaluation lines (the mean since the last evaluation).
    A last line cut off (a killed run) is skipped; a bad line elsewhere is an error."""
    path = Path(folder) / "log.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise InputError(f"{folder}: cannot read log.jsonl ({e.strerror or e})") from None
    losses = {True: {}, False: {}}  # is an evaluation line -> {step: loss}
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            if number == len(lines):
                continue  # cut off mid-line by a kill: train.py drops such a line on --resume too
            raise InputError(f"{path}:{number}: not JSON") from None
        step = entry.get("step") if isinstance(entry, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise InputError(f"{path}:{number}: not a train.py log line (no integer 'step')")
        loss = entry.get("loss")
        if isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss):
            losses["metrics" in entry][step] = float(loss)
    return losses[False] or losses[True]


def loss_curves(folders):
    """Per method: the mean training loss over its runs at the steps every one of them logged."""
    by_method = {}
    for run in read_runs(folders):  # one task, one model
        by_method.setdefault(run["method"], []).append((run, read_log(run["folder"])))
    curves = []
    for method, members in by_method.items():
        steps = sorted(set.intersection(*(set(log) for _, log in members)))
        if not steps:
            names = ", ".join(run["folder"] for run, _ in members)
            raise InputError(f"{names}: no step with a numeric loss common to every run of {method} "
                             f"(log.jsonl has no 'loss' numbers, or the runs logged at different steps)")
        mean = [statistics.mean(log[s] for _, log in members) for s in steps]
        curves.append(dict(method=method, steps=steps, loss=mean, runs=len(members),
                           seeds=sorted(run["seed"] for run, _ in members), task=members[0][0]["task"],
                           model=members[0][0]["model"]))
    return curves


def read_bench(path):
    """bench.py --json (whole steps) -> (rows, description). Each row: name, eager ms, graph ms or None."""
    data = read_json(path)
    shape = ("expected bench.py --json output of whole steps: an object with 'args', 'device' and a "
             "'steps' list whose rows have 'row' and 'ms', the first row 'floor' (--per-layer output is not this)")
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list) or not steps or not isinstance(data.get("args"), dict):
        raise InputError(f"{path}: {shape}")
    rows = []
    for row in steps:
        ms = row.get("ms") if isinstance(row, dict) else None
        graph = row.get("step_ms") if isinstance(row, dict) else None
        if not isinstance(row, dict) or not isinstance(row.get("row"), str) or not _positive(ms):
            raise InputError(f"{path}: a row is {str(row)[:80]}; {shape}")
        rows.append(dict(name=row["row"], eager_ms=float(ms), graph_ms=float(graph) if _positive(graph) else None))
    if rows[0]["name"] != "floor":
        raise InputError(f"{path}: the first row is {rows[0]['name']!r}, not 'floor'; {shape}")
    return rows, bench_description(data)


def _positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def bench_description(data):
    """('NVIDIA H200', 'roberta-base (hidden 768, 12 layers), batch 32 × 128, bf16') from the file."""
    args = data["args"]
    config = KNOWN_CONFIGS.get(args.get("model"), {})
    hidden = args.get("hidden") or config.get("hidden_size", "?")
    layers = args.get("layers") or config.get("num_hidden_layers", "?")
    processes = data.get("processes") if isinstance(data.get("processes"), int) else 1
    return str(data.get("device", "?")), (
        f"{args.get('model', '?')} (hidden {hidden}, {layers} layers), batch {args.get('batch', '?')} × "
        f"{args.get('seq', '?')}, {args.get('precision', '?')} autocast"
        + (f", {processes} processes (DDP), batch per process" if processes > 1 else "")
        + (f", graph steps after --compile {args['compile']}" if isinstance(args.get("compile"), str) else ""))


PEFT_VARIANTS = (("ours-none", "ours, short runs (CUDA graphs alone)"),
                 ("ours-layers", "ours, long runs (layers compiled)"),
                 ("peft-ro", "PEFT, reduce-overhead"), ("peft-eager", "PEFT, eager"))


def peft_bench_row(variant, method):
    """The row of scripts/peft_bench.py that draws `variant` of PEFT_VARIANTS for `method`: 'ours-none', 'lora' ->
    'ours-lora-none'; the floor's 'ours-none' is 'ours-floor' (no adapted layer: its default compiles nothing)."""
    side, _, way = variant.partition("-")
    return f"{side}-{method}" + ("" if (method, way) == ("floor", "none") else f"-{way}")


def read_peft_bench(paths):
    """scripts/peft_bench.py --json files -> (methods, description). methods: [(method, {variant: row or None})] in
    spectral_ft.METHODS' order, the floor last; a row: ms, loop_ms, device, or error (failed). One batch size for
    all rows."""
    shape = "expected scripts/peft_bench.py --json output: an object with 'args' and a 'bench' list of rows with 'row'"
    rows, devices, args = {}, [], None
    for path in paths:
        data = read_json(path)
        bench = data.get("bench") if isinstance(data, dict) else None
        if not isinstance(bench, list) or not isinstance(data.get("args"), dict):
            raise InputError(f"{path}: {shape}")
        args = args or data["args"]
        for row in bench:
            if not isinstance(row, dict) or not isinstance(row.get("row"), str) or not (
                    "error" in row or _positive(row.get("ms")) and _positive(row.get("loop_ms"))):
                raise InputError(f"{path}: a row is {str(row)[:80]}; {shape}, each with 'ms' and 'loop_ms' or 'error'")
            rows[row["row"]] = dict(row, source=str(path))
            devices += [row["device"]] if isinstance(row.get("device"), str) else []
    if not rows:
        raise InputError(f"{paths[0]}: no bench rows ({shape})")
    if len({r.get("batch") for r in rows.values()}) > 1:
        raise InputError(f"{', '.join(map(str, paths))}: rows of several batch sizes; give files of one")
    names = dict.fromkeys(r.split("-")[1] for r in rows)
    order = {m: i for i, m in enumerate([*spectral_ft.METHODS, "floor"])}  # a file's own follows its call's plan
    methods = sorted(names, key=lambda m: order.get(m, len(order)))
    table = [(m, {v: rows.get(peft_bench_row(v, m)) for v, _ in PEFT_VARIANTS}) for m in methods]
    batch = next(iter(rows.values())).get("batch", "?")
    shape_text = (f"roberta-base's shape, batch {batch} × {args.get('seq', '?')}, bf16 autocast, fused AdamW, each row in "
                  f"its own process")
    return table, (" and ".join(dict.fromkeys(devices)) or "?", shape_text)


# -----------------------------------------------------------------------------
# Why locations matter: relative reconstruction errors at an equal parameter budget (exact, float64)


def relative_error(captured, total):
    """sqrt(1 − captured/total), captured the energy (squared Frobenius norm) an approximation keeps."""
    return torch.sqrt((1 - captured / total).clamp(min=0))


def tail_errors(energy, counts):
    """sqrt(Σ_{i>=n} energy_i / Σ energy) for each n in counts: the error of keeping the first n of an
    orthogonal expansion, summed from the tail (exact down to 0, where 1 − kept/total is not)."""
    tails = torch.cat([energy.flip(0).cumsum(0).flip(0), energy.new_zeros(1)])  # tails[n] = Σ_{i>=n}
    return torch.sqrt(tails[list(counts)] / tails[0])


def svd_errors(delta, ranks):
    """Best rank-r error for each r (Eckart-Young): sqrt(Σ_{i>r} σ_i²) / ‖ΔW‖_F."""
    return tail_errors(torch.linalg.svdvals(delta) ** 2, ranks)  # σ² descending


def dct_coefficients(delta):
    """The orthonormal 2-D DCT-II C ΔW Cᵀ (LoCA's S for ΔW = Cᵀ S C), same shape as delta."""
    C_out = spectral_ft.dct_matrix(delta.shape[0], delta.dtype)  # (out, out)
    C_in = spectral_ft.dct_matrix(delta.shape[1], delta.dtype)  # (in, in)
    return C_out @ delta @ C_in.T


def dct_top_errors(delta, counts):
    """Keeping the n largest |c| of the DCT: the error is the energy of the rest (Parseval)."""
    return tail_errors((dct_coefficients(delta) ** 2).flatten().sort(descending=True).values, counts)


def dct_random_errors(delta, counts, generator):
    """n DCT coefficients at FourierFT-style random locations: the first n of one seeded permutation
    of all out·in positions (spectral_ft.random_locations takes them so, whatever n). Their
    least-squares values are the coefficients themselves (an orthonormal basis), so the error is
    the energy of the positions after the first n (Parseval)."""
    rows, cols = spectral_ft.random_locations(delta.numel(), *delta.shape, generator)  # (out·in,) each
    return tail_errors(dct_coefficients(delta)[rows, cols] ** 2, counts)


def dft_real_random_errors(delta, counts, generator):
    """FourierFT's family: ΔŴ = Re(IDFT2(F)), F real at n random locations, i.e. a combination of
    the cosines cos(2π(jk/out + ml/in)) of the chosen frequencies (k, l). Cosines of different
    frequency pairs {(k, l), (−k, −l)} are orthogonal; a pair chosen twice adds nothing. With the
    least-squares coefficients each new pair keeps ⟨ΔW, cos⟩² / ‖cos‖², where ⟨ΔW, cos⟩ = Re FFT2(ΔW)
    at (k, l) and ‖cos‖² = out·in/2, or out·in where (k, l) is its own mirror."""
    height, width = delta.shape
    rows, cols = spectral_ft.random_locations(max(counts), height, width, generator)  # (n,), (n,)
    projections = torch.fft.fft2(delta).real[rows, cols]  # ⟨ΔW, cos_kl⟩
    mirror_rows, mirror_cols = (-rows) % height, (-cols) % width
    norms = torch.full_like(projections, height * width / 2)
    norms[(mirror_rows == rows) & (mirror_cols == cols)] = height * width  # its own mirror: cos² sums to out·in
    pair = torch.minimum(rows * width + cols, mirror_rows * width + mirror_cols)  # one id per mirror pair
    order = torch.arange(len(pair))
    _, which = torch.unique(pair, return_inverse=True)
    first = torch.full((int(which.max()) + 1,), len(pair)).scatter_reduce(0, which, order, "amin")
    energy = torch.where(first[which] == order, projections ** 2 / norms, 0.0)  # a repeated pair keeps nothing
    kept = torch.cat([energy.new_zeros(1), energy.cumsum(0)])
    return relative_error(kept[list(counts)], (delta ** 2).sum())


RANKS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192)
# name: (label, count of fitted values for a budget B on a d x d matrix)
FAMILIES = {
    "svd": ("best rank r (truncated SVD), B = 2dr", lambda budget, d: budget // (2 * d)),
    "dct_random": ("DCT at random locations, B = n", lambda budget, d: budget),
    "dft_random": ("DFT real part, random (FourierFT), B = n", lambda budget, d: budget),
    "dct_top": ("DCT, n largest |c| (LoCA's aim), B = 3n", lambda budget, d: budget // 3),
    "dct_top_free": ("same, locations not counted, B = n", lambda budget, d: budget),
}


def location_errors(d, seed, ranks):
    """Every family's relative error on one Gaussian d x d ΔW (seed `seed`) at budgets r·2d."""
    delta = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    budgets = [2 * d * r for r in ranks]
    counts = {name: [count(b, d) for b in budgets] for name, (_, count) in FAMILIES.items()}
    locations = lambda: torch.Generator().manual_seed(10_000 + seed)  # the same locations for both transforms
    errors = {"svd": svd_errors(delta, counts["svd"]),
              "dct_random": dct_random_errors(delta, counts["dct_random"], locations()),
              "dft_random": dft_real_random_errors(delta, counts["dft_random"], locations()),
              "dct_top": dct_top_errors(delta, counts["dct_top"]),
              "dct_top_free": dct_top_errors(delta, counts["dct_top_free"])}
    return budgets, counts, {name: e.tolist() for name, e in errors.items()}


def location_study(sizes, seeds):
    """{d: {budgets, families: {name: {label, count, mean, std}}}} over `seeds` matrices per size,
    at rank 1 .. d/4 budgets."""
    study = {}
    for d in sizes:
        ranks = [r for r in RANKS if r <= d // 4] or [1]
        per_seed = [location_errors(d, seed, ranks) for seed in range(seeds)]
        budgets, counts, _ = per_seed[0]
        families = {}
        for name, (label, _) in FAMILIES.items():
            columns = list(zip(*(errors[name] for _, _, errors in per_seed)))  # per budget, one value per seed
            stats = [mean_std(column) for column in columns]
            families[name] = dict(label=label, count=counts[name], mean=[m for m, _ in stats],
                                  std=[s for _, s in stats])
        study[d] = dict(budgets=budgets, ranks=ranks, seeds=seeds, families=families)
    return study


# -----------------------------------------------------------------------------
# The figures: each returns the SVG text


def accuracy_svg(marks, references, runs, title=None):
    """Best dev metric × 100 against trainable parameters outside the head (log axis). The y range
    is the marks' (± std); a reference more than that range's span away is named at the plot's
    edge instead of stretching the axis (head-only runs often sit far below every adapter)."""
    metric, task, model = runs[0]["metric"], runs[0]["task"], Path(runs[0]["model"]).name
    if not marks:
        raise InputError(f"{runs[0]['folder']} ...: only head/full runs; the x axis needs adapter methods")
    svg = Svg(WIDTH, 0)
    top = draw_title(svg, title or f"{task.upper()} on {model}: best dev {metric} against trainable parameters",
               f"mean ± std over seeds (runs per method: {runs_text(marks + references)}); "
               f"parameters outside the classification head")
    low = min(m["mean"] - m["std"] for m in marks)
    high = max(m["mean"] + m["std"] for m in marks)
    span = max(high - low, 2.0)
    shown = [r for r in references if low - span <= r["mean"] <= high + span]
    values = [low, high] + [r["mean"] + s * r["std"] for r in shown for s in (-1, 1)]
    x = Scale(*log_range(min(m["parameters"] for m in marks), max(m["parameters"] for m in marks), 1.6),
              80, WIDTH - 24, log=True)
    top += 17
    y = Scale(*nice_range(min(values), max(values)), top + 358, top)
    svg.height = top + 418
    draw_axes(svg, x, y, "trainable parameters outside the head (log scale)", f"best dev {metric} × 100")
    labels = LabelPlacer((x.start, y.end, x.end, y.start))
    texts = [draw_reference(svg, labels, x, y, ref, on_scale=ref in shown) for ref in references]
    for m in marks:  # every mark reserved first, so that no label covers one
        px, bar_low, bar_high = x(m["parameters"]), y(m["mean"] - m["std"]), y(m["mean"] + m["std"])
        labels.reserve(px - 5, min(bar_high, y(m["mean"]) - 5), px + 5, max(bar_low, y(m["mean"]) + 5))
    for m in marks:
        draw_mark(svg, labels, x, y, m)
    for px, py, text, color in texts:  # over the marks' error bars
        svg.text(px, py, text, 11.5, "end", color, class_="reference-label", **HALO)
    return str(svg)


def draw_reference(svg, labels, x, y, ref, on_scale):
    """head / full: a dashed line across the plot; returns its text, for the right end (x, y, text,
    color), drawn last. Off scale only the text, at the top or bottom edge with an arrow."""
    dash, name = {"head": ("8 5", "head only"), "full": ("2 4", "full fine-tuning")}[ref["method"]]
    color = color_of(ref["method"])
    text = f"{name}: {ref['mean']:.1f} ± {ref['std']:.1f}" + (
        f" ({si(ref['parameters'])} params)" if ref["method"] == "full" else "")
    svg.open("g", class_="reference", data_method=ref["method"])
    if on_scale:
        py = y(ref["mean"])
        svg.line(x.start, py, x.end, py, color, 1.5, stroke_dasharray=dash)
        labels.reserve(x.start, py - 2, x.end, py + 2)  # no label across the line
        py -= 5
    else:
        below = ref["mean"] < y.low
        text = f"{'▼' if below else '▲'} {text} ({'below' if below else 'above'} this range)"
        py = y.start - 8 if below else y.end + 17
    labels.reserve(x.end - 6 - text_width(text, 11.5), py - 12, x.end - 6, py + 3)
    svg.close("g")
    return x.end - 6, py, text, color


def runs_text(entries):
    counts = sorted({e["runs"] for e in entries})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def draw_mark(svg, labels, x, y, mark):
    """One method: error bar (mean ± std), a dot, and its name beside it."""
    color, px, py = color_of(mark["method"]), x(mark["parameters"]), y(mark["mean"])
    svg.open("g", class_="mark", data_method=mark["method"])
    if mark["std"] > 0:
        low, high = y(mark["mean"] - mark["std"]), y(mark["mean"] + mark["std"])
        svg.line(px, low, px, high, color, 1.5)
        svg.line(px - 4, low, px + 4, low, color, 1.5)
        svg.line(px - 4, high, px + 4, high, color, 1.5)
    svg.add("circle", cx=float(px), cy=float(py), r=5, fill=color, stroke="white", stroke_width=1)
    labels.place(svg, px, py, mark["label"], 12, color)
    svg.close("g")


def steptime_svg(rows, description, title=None):
    """Per row, horizontal bars: eager and graph step (train.py's CUDA graphs, after the file's --compile scope,
    which the subtitle names), ÷ the floor's graph step."""
    graphs = rows[0]["graph_ms"] is not None
    unit = rows[0]["graph_ms"] if graphs else rows[0]["eager_ms"]
    band = 34
    svg = Svg(WIDTH, 0)
    device, shape = description
    top = 43 + draw_title(svg, title or f"Training step time per method on {device}", shape,
               ("eager (--eager) and graph (train.py's CUDA graphs) step, ÷ the floor's graph step "
                f"({unit:.2f} ms)") if graphs else
               f"eager step only (no graph steps in this file), ÷ the floor's eager step ({unit:.2f} ms)")
    longest = max(r["eager_ms"] for r in rows) / unit
    svg.height = top + band * len(rows) + 70
    x = Scale(0, nice_range(0, longest * 1.25, 8)[1], 110, WIDTH - 30)
    y = Scale(0, len(rows), top + band * len(rows), top)
    draw_axes(svg, x, y, "step time ÷ the floor's step", None, y_ticks=False)
    svg.line(x(1), y.start, x(1), y.end, MUTED, 1, stroke_dasharray="4 3", class_="unit-line")  # 1.0×
    for i, row in enumerate(rows):
        middle = y.end + band * (i + 0.5)
        svg.open("g", class_="mark", data_method=row["name"])
        svg.text(x.start - 8, middle + 4, row["name"], 12, "end")
        bars = [("eager", row["eager_ms"], 0.35 if graphs else 1.0)]  # (kind, ms, opacity)
        bars += [("graph", row["graph_ms"], 1.0)] if graphs else []
        for j, (kind, ms, opacity) in enumerate(bars):
            if ms is not None:
                bar_top = middle - 12 + 12 * j if graphs else middle - 6
                draw_bar(svg, x, bar_top, 11, ms, unit, color_of(row["name"]), opacity, kind)
        if graphs and row["graph_ms"] is None:
            svg.text(x(1) + 4, middle + 9, "no graph step (capture failed)", 10, "start", MUTED)
        svg.close("g")
    if graphs:
        draw_legend(svg, [("bar", "#888888", 0.35, "eager"), ("bar", "#888888", 1.0, "graph")],
                    WIDTH - 30, top - 10, anchor="end")
    return str(svg)


def peft_svg(methods, description, title=None):
    """Per method, four bars (PEFT_VARIANTS) of ms on one log axis; each labelled with its ms and its loop's."""
    band, bar = 52, 9
    svg = Svg(WIDTH, 0)
    device, shape = description
    top = 62 + draw_title(svg, title or f"Training step against transformers + PEFT on {device}", shape,
                          "bars: the median step timed alone; in parentheses: the steps in a row, as a training "
                          "loop runs them")
    measured = [r[key] for _, variants in methods for r in variants.values() if r and "ms" in r
                for key in ("ms", "loop_ms")]
    low, high = log_range(min(measured), max(measured), 1.15)
    svg.height = top + band * len(methods) + 64
    x = Scale(low, high * 2.2, 110, WIDTH - 30, log=True)  # room right of the longest bar for its label
    y = Scale(0, len(methods), top + band * len(methods), top)
    draw_axes(svg, x, y, "ms per optimizer step (log scale)", None, y_ticks=False)
    styles = {"ours-none": (0.55, None), "ours-layers": (1.0, None), "peft-ro": (1.0, "#555555"), "peft-eager": (0.35, "#555555")}
    for i, (method, variants) in enumerate(methods):
        first = y.end + band * i + 6
        svg.open("g", class_="mark", data_method=method)
        svg.text(x.start - 8, first + 2 * (bar + 2) + 4, method, 12, "end")
        for j, (variant, _) in enumerate(PEFT_VARIANTS):
            row, (opacity, color), bar_top = variants[variant], styles[variant], first + j * (bar + 2)
            color = color or color_of(method)
            if row and "ms" in row:
                svg.add("rect", x=float(x.start), y=float(bar_top), width=float(x(row["ms"]) - x.start), height=bar,
                        fill=color, fill_opacity=opacity, stroke=color, stroke_width=1, class_=f"bar {variant}")
                svg.text(x(row["ms"]) + 4, bar_top + bar - 1, f"{row['ms']:.2f} ms ({row['loop_ms']:.2f})", 10, "start",
                         MUTED)
            else:
                svg.text(x.start + 4, bar_top + bar - 1, f"{dict(PEFT_VARIANTS)[variant]}: {missing(row)}", 10,
                         "start", MUTED, class_="missing")
        svg.close("g")
    draw_legend(svg, [("bar", "#0072B2", 0.55, PEFT_VARIANTS[0][1]), ("bar", "#0072B2", 1.0, PEFT_VARIANTS[1][1]),
                      ("bar", "#555555", 1.0, PEFT_VARIANTS[2][1]), ("bar", "#555555", 0.35, PEFT_VARIANTS[3][1])],
                WIDTH - 30, top - 28, anchor="end", rows=2)
    return str(svg)


def draw_bar(svg, x, top, height, ms, unit, color, opacity, kind):
    """A bar to ms / unit, its value after its end; a value that would straddle the dashed 1.0× line
    starts right of the line instead."""
    value = ms / unit
    svg.add("rect", x=float(x(0)), y=float(top), width=float(x(value) - x(0)), height=height, fill=color,
            fill_opacity=opacity, stroke=color, stroke_width=1, class_=f"bar {kind}")
    text = f"{value:.2f}× ({ms:.1f} ms)"
    start = x(value) + 4
    if start - 2 <= x(1) <= start + text_width(text, 10.5) + 2:
        start = x(1) + 4
    svg.text(start, top + height - 1.5, text, 10.5, "start", MUTED)


def draw_legend(svg, entries, x, y, anchor="start", rows=1):
    """Swatches and their texts, filled column by column (`rows` per column), starting at x (or
    ending there, anchor 'end'). entry: ('bar', color, opacity, text) or ('line', color, dash, text
    [, marker])."""
    columns = [entries[i:i + rows] for i in range(0, len(entries), rows)]
    widths = [max(28 + text_width(e[3], 11.5) for e in column) + 18 for column in columns]
    if anchor == "end":
        x -= sum(widths) - 18
    svg.open("g", class_="legend")
    for c, column in enumerate(columns):
        for r, entry in enumerate(column):
            left, top = x + sum(widths[:c]), y + 18 * r
            kind, color, style, text = entry[:4]
            if kind == "bar":
                svg.add("rect", x=float(left), y=float(top - 9), width=20, height=10, fill=color,
                        fill_opacity=style, stroke=color)
            else:
                svg.line(left, top - 4, left + 22, top - 4, color, 2, stroke_dasharray=style)
                if len(entry) > 4:
                    draw_marker(svg, entry[4], left + 11, top - 4, color)
            svg.text(left + 28, top, text, 11.5)
    svg.close("g")


def draw_marker(svg, shape, x, y, color):
    if shape == "circle":
        svg.add("circle", cx=float(x), cy=float(y), r=3.2, fill=color)
    elif shape == "square":
        svg.add("rect", x=float(x - 3), y=float(y - 3), width=6, height=6, fill=color)
    elif shape == "triangle":
        svg.add("path", d=f"M{x:.1f},{y - 4:.1f} L{x + 4:.1f},{y + 3:.1f} L{x - 4:.1f},{y + 3:.1f} Z", fill=color)
    else:  # diamond
        svg.add("path", d=f"M{x:.1f},{y - 4:.1f} L{x + 4:.1f},{y:.1f} L{x:.1f},{y + 4:.1f} L{x - 4:.1f},{y:.1f} Z",
                fill=color)


def loss_svg(curves, title=None, log_y=False):
    """Training loss against step, one line per method, labelled at its right end."""
    svg = Svg(WIDTH, 0)
    seeds = runs_text(curves)
    model = Path(curves[0]["model"]).name
    top = 17 + draw_title(svg, title or f"Training loss, {curves[0]['task'].upper()} on {model}",
                          f"mean over seeds (runs per method: {seeds}) at the steps every run logged")
    all_losses = [v for c in curves for v in c["loss"]]
    x = Scale(0, nice_range(0, max(c["steps"][-1] for c in curves))[1], 80, WIDTH - 130)
    if log_y and min(all_losses) <= 0:
        raise InputError(f"--log-y: a loss is {min(all_losses)}, and a log axis needs positive values")
    y = (Scale(*log_range(min(all_losses), max(all_losses), 1.1), top + 338, top, log=True) if log_y
         else Scale(*nice_range(min(all_losses), max(all_losses)), top + 338, top))
    svg.height = top + 398
    draw_axes(svg, x, y, "optimizer step", "training loss" + (" (log scale)" if log_y else ""))
    ends = []
    for curve in sorted(curves, key=lambda c: c["method"]):
        color = color_of(curve["method"])
        points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(curve["steps"], curve["loss"]))
        svg.open("g", class_="mark", data_method=curve["method"])
        svg.add("polyline", points=points, fill="none", stroke=color, stroke_width=1.8, stroke_linejoin="round")
        if len(curve["steps"]) == 1:
            svg.add("circle", cx=float(x(curve["steps"][0])), cy=float(y(curve["loss"][0])), r=3, fill=color)
        svg.close("g")
        ends.append([y(curve["loss"][-1]), x(curve["steps"][-1]), curve["method"], color])
    for label_y, (end_y, end_x, method, color) in zip(spread(sorted(e[0] for e in ends), 14, y.end + 4, y.start - 4),
                                                        sorted(ends)):
        svg.line(end_x + 2, end_y, x.end + 6, label_y, color, 0.8, stroke_dasharray="2 2")
        svg.text(x.end + 9, label_y + 4, method, 12, "start", color, class_="label")
    return str(svg)


def spread(positions, gap, low, high):
    """Sorted positions moved apart to at least `gap` from each other, kept in [low, high]."""
    placed = []
    for p in positions:
        placed.append(max(p, placed[-1] + gap) if placed else max(p, low))
    overflow = placed[-1] - high if placed else 0
    if overflow > 0:  # shift back up, as far as the first one allows
        placed = [p - overflow for p in placed]
        for i in range(1, len(placed)):
            placed[i] = max(placed[i], placed[i - 1] + gap)
    return placed


LOCATION_STYLES = {  # name: (color, dash, marker)
    "svd": ("#0072B2", None, "circle"), "dct_random": ("#8C564B", "5 3", "square"),
    "dft_random": ("#E69F00", None, "triangle"), "dct_top": ("#D55E00", None, "diamond"),
    "dct_top_free": ("#D55E00", "2 3", "diamond")}


def locations_svg(study, title=None):
    """Relative reconstruction error against budget, one panel per matrix size, shared legend."""
    sizes = list(study)
    svg = Svg(WIDTH, 0)
    counts = sorted({s["seeds"] for s in study.values()})
    seeds = (f"{counts[0]} per size" if len(counts) == 1
             else ", ".join(f"{s['seeds']} for d = {d}" for d, s in study.items()))
    below_title = draw_title(svg, title or "Why locations matter: reconstructing a Gaussian ΔW at an equal budget",
               f"relative error ‖ΔW − ΔŴ‖ / ‖ΔW‖, mean over Gaussian matrices ({seeds})")
    gap = 56
    width = (WIDTH - 80 - 36 - gap * (len(sizes) - 1)) / len(sizes)
    errors = [v for s in study.values() for f in s["families"].values() for v in f["mean"]]
    y_range = (math.floor(min(errors) * 10) / 10, 1.0)
    for i, d in enumerate(sizes):
        left = 80 + i * (width + gap)
        budgets = study[d]["budgets"]
        x = Scale(*log_range(min(budgets), max(budgets)), left, left + width, log=True)
        y = Scale(*y_range, below_title + 355, below_title + 35)
        draw_axes(svg, x, y, "parameter budget B (log scale)", "relative error" if i == 0 else "")
        svg.text((x.start + x.end) / 2, below_title + 27, f"d = {d}  (d² = {d * d:,})", 13, "middle",
                 font_weight="bold")
        for name, family in study[d]["families"].items():
            color, dash, marker = LOCATION_STYLES[name]
            svg.open("g", class_="mark", data_method=name, data_size=d)
            points = " ".join(f"{x(b):.1f},{y(e):.1f}" for b, e in zip(budgets, family["mean"]))
            svg.add("polyline", points=points, fill="none", stroke=color, stroke_width=1.8, stroke_dasharray=dash)
            for b, e in zip(budgets, family["mean"]):
                draw_marker(svg, marker, x(b), y(e), color)
            svg.close("g")
    families = next(iter(study.values()))["families"]
    entries = [("line", *LOCATION_STYLES[n][:2], f["label"], LOCATION_STYLES[n][2]) for n, f in families.items()]
    bottom = below_title + 355
    draw_legend(svg, entries, 80, bottom + 70, rows=3)
    spread_note = max(v for s in study.values() for f in s["families"].values() for v in f["std"])
    for k, line in enumerate(locations_caption(spread_note)):
        svg.text(80, bottom + 140 + 15 * k, line, 11, "start", MUTED, class_="caption")
    svg.height = bottom + 200
    return str(svg)


def locations_caption(largest_std):
    return ["Budget B: a rank-r factor pair stores r(2d) values; random locations store only a seed (n = B);",
            "a learnt location stores a row and a column index, so n largest-|c| coefficients cost 3n (n = ⌊B/3⌋).",
            "DCT: orthonormal DCT-II, errors exact by Parseval. DFT real part: least-squares fit on the chosen",
            f"cosines. Budgets: rank 1 to d/4. Largest standard deviation over seeds: {largest_std:.4f} (not drawn)."]


# -----------------------------------------------------------------------------
# Writing a figure: the SVG, and its numbers beside it (same stem, .json and .csv)


def write_figure(out, svg_text, numbers, table):
    """out.svg, out.json (the numbers and the choices behind them), out.csv (table: header + rows),
    each written to a temporary name and renamed."""
    out = Path(out)
    with atomic_write(out, "w") as f:
        f.write(svg_text)
    with atomic_write(out.with_suffix(".json"), "w") as f:
        f.write(json.dumps(numbers, indent=1) + "\n")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(table)
    with atomic_write(out.with_suffix(".csv"), "w") as f:
        f.write(buffer.getvalue())
    return [str(out), str(out.with_suffix(".json")), str(out.with_suffix(".csv"))]


def make_accuracy(args):
    runs = read_runs(args.runs)
    marks, references = accuracy_groups(runs)
    numbers = dict(figure="accuracy", metric=f"best dev {runs[0]['metric']} × 100 (results.json best.value)",
                   parameters="trainable_parameters.adapter (outside the head; LoCA without its locations)",
                   task=runs[0]["task"], model=runs[0]["model"], marks=marks, references=references)
    table = [["method", "label", "trainable_parameters", "mean", "std", "runs", "seeds"]] + [
        [m["method"], m["label"], m["parameters"], f"{m['mean']:.4f}", f"{m['std']:.4f}", m["runs"],
         " ".join(map(str, m["seeds"]))] for m in marks + references]
    return accuracy_svg(marks, references, runs, args.title), numbers, table


def make_steptime(args):
    rows, description = read_bench(args.bench)
    graphs = rows[0]["graph_ms"] is not None
    unit = rows[0]["graph_ms"] if graphs else rows[0]["eager_ms"]
    for row in rows:
        row["eager_x_unit"] = row["eager_ms"] / unit
        row["graph_x_unit"] = row["graph_ms"] / unit if row["graph_ms"] else None
    numbers = dict(figure="steptime", source=str(args.bench), device=description[0], shape=description[1],
                   unit=f"the floor's {'graph' if graphs else 'eager'} step, {unit} ms", rows=rows)
    table = [["row", "eager_ms", "graph_ms", "eager_x_unit", "graph_x_unit"]] + [
        [r["name"], r["eager_ms"], r["graph_ms"] or "", f"{r['eager_x_unit']:.4f}",
         "" if r["graph_x_unit"] is None else f"{r['graph_x_unit']:.4f}"] for r in rows]
    return steptime_svg(rows, description, args.title), numbers, table


def missing(row):
    """Why a peft_bench row has no bar: not run, stopped by --row-timeout (no step in its seconds), or failed."""
    if not row:
        return "not run"
    return f"no step in {row['process_s']:g} s" if row["error"].startswith("stopped") else "failed"


def make_peft(args):
    methods, description = read_peft_bench(args.bench)
    numbers = dict(figure="peft", sources=list(map(str, args.bench)), device=description[0], shape=description[1],
                   methods={m: v for m, v in methods})
    table = [["method", "variant", "ms", "loop_ms", "failed", "device", "source"]] + [
        [m, variant, row.get("ms", ""), row.get("loop_ms", ""), "error" in row, row.get("device", ""), row["source"]]
        for m, variants in methods for variant, row in variants.items() if row]
    return peft_svg(methods, description, args.title), numbers, table


def make_loss(args):
    curves = loss_curves(args.runs)
    numbers = dict(figure="loss", loss="mean over each method's runs at the steps all of them logged", curves=curves)
    table = [["method", "step", "mean_loss", "runs"]] + [
        [c["method"], s, f"{v:.6f}", c["runs"]] for c in curves for s, v in zip(c["steps"], c["loss"])]
    return loss_svg(curves, args.title, args.log_y), numbers, table


def make_locations(args):
    study = location_study(args.sizes, args.seeds)
    numbers = dict(figure="locations",
                   error="‖ΔW − ΔŴ‖_F / ‖ΔW‖_F, ΔW d x d iid N(0, 1), mean and std over seeds",
                   budget={name: label for name, (label, _) in FAMILIES.items()},
                   caption=locations_caption(0.0)[:3], sizes={str(d): s for d, s in study.items()})
    table = [["d", "family", "budget", "fitted_values", "mean_error", "std_error", "seeds"]] + [
        [d, name, b, count, f"{m:.6f}", f"{s:.6f}", study[d]["seeds"]]
        for d in study for name, f in study[d]["families"].items()
        for b, count, m, s in zip(study[d]["budgets"], f["count"], f["mean"], f["std"])]
    return locations_svg(study, args.title), numbers, table


# -----------------------------------------------------------------------------
# The command line


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise InputError(message)


def size_list(text):
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or any(not 4 <= d <= 2048 for d in sizes):
        raise argparse.ArgumentTypeError(f"each size must be between 4 and 2048, got {text!r}")
    return sizes


def seed_count(text):
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 100, got {text!r}")
    return int(text)


def build_parser():
    parser = Parser(prog="figures.py", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    figures = parser.add_subparsers(dest="figure", required=True, metavar="{accuracy,steptime,peft,loss,locations}")
    made = {}
    for name, help_ in (("accuracy", "best dev metric against trainable parameters, from run folders"),
                        ("steptime", "step time per method from bench.py --json"),
                        ("peft", "our step against PEFT's per shared method, from scripts/peft_bench.py --json"),
                        ("loss", "training loss against step, from run folders' log.jsonl"),
                        ("locations", "reconstruction error at equal budget: why locations matter (no input)")):
        made[name] = figures.add_parser(name, help=help_, description=help_)
        made[name].add_argument("--out", required=True, help="the .svg to write (.json and .csv go beside it)")
        made[name].add_argument("--title", help="replace the figure's title")
    for name in ("accuracy", "loss"):
        made[name].add_argument("runs", nargs="*", metavar="RUN_DIR", help="run folders, each with results.json")
    made["loss"].add_argument("--log-y", action="store_true", help="training loss on a log axis")
    made["steptime"].add_argument("bench", metavar="BENCH_JSON", help="a file written by bench.py --json")
    made["peft"].add_argument("bench", nargs="+", metavar="PEFT_BENCH_JSON",
                              help="files written by scripts/peft_bench.py --json (a later file's row replaces an earlier one's)")
    made["locations"].add_argument("--sizes", type=size_list, default=[128, 768], help="d, comma-separated")
    made["locations"].add_argument("--seeds", type=seed_count, default=5, help="Gaussian matrices per size")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not args.out.endswith(".svg"):
        raise InputError(f"--out {args.out}: must end in .svg (FIGURE.json and FIGURE.csv are written beside it)")
    if args.figure in ("accuracy", "loss") and not args.runs:
        raise InputError(f"{args.figure}: no run folders given (RUN_DIR ..., each holding a results.json)")
    make = {"accuracy": make_accuracy, "steptime": make_steptime, "peft": make_peft, "loss": make_loss,
            "locations": make_locations}
    svg_text, numbers, table = make[args.figure](args)
    try:
        return write_figure(args.out, svg_text, numbers, table)
    except OSError as e:
        raise InputError(f"--out {args.out}: cannot write it ({e.strerror or e})") from None


def cli(argv=None):
    """main() with bad input as one line `figures.py: error: ...` and exit status 2."""
    try:
        for path in main(argv):
            print(f"wrote {path}")
        return 0
    except InputError as e:
        print(f"figures.py: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
