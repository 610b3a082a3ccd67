"""README's numbers have a source: every number in its prose, tables and code comments occurs in
REPRODUCE.md (where each measured number stands beside its command), or is on NOT_MEASURED below; and
README's copy-cost bound holds for spectral_ft.py as it is now (scripts/copy_cost.py).

The check is by text: it catches a README number that REPRODUCE.md does not hold at all (a rounding
of its own, a stale rerun, a number from nowhere), not one that happens to equal another number there."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Numbers in README that are facts, not measurements (each says why), so REPRODUCE.md need not hold them.
NOT_MEASURED = {
    "2021", "2022", "2023",  # the methods table: the papers' years (LoRA, BitFit, VeRA / OFT)
    "3.1",  # the Spectral Adapter's Lemma 3.1, a name
    "0.999", "501", "767", "766",  # LoCA's authors clamp locations to [0, 0.999]: round(0.999 · 767) = 766
}

# A number: digits with thousands commas, a decimal part, an exponent; not part of a name (H200, fp16,
# L6-v2, §4b, eq-3) and not a version's or a path's tail. "3.86x", "15%" and "1.08-1.39" are numbers.
NUMBER = re.compile(r"(?<![\w.§/^-])(\d[\d,]*(?:\.\d+)?(?:e[-−]\d+)?)(?=x\b|×|%|[^\w]|$)")


def numbers(text):
    return [m.group(1).rstrip(",").replace("−", "-") for m in NUMBER.finditer(text)]


def readable_text(markdown):
    """What a reader takes as statements: prose and tables (inline code, link targets and image paths
    left out: they are names), and the comments of code blocks (the commands themselves are inputs)."""
    parts, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            comment = re.search(r"(?:^|\s)#\s(.*)$", line)
            parts.append(comment.group(1) if comment else "")
        else:
            parts.append(re.sub(r"\]\([^)]*\)", "]", re.sub(r"`[^`]*`", " ", line)))
    return parts


def unsourced(readme, reproduce):
    """(number, README line) for each number of README with no source."""
    sourced = set(numbers(reproduce)) | NOT_MEASURED
    return [(n, line.strip()) for line in readable_text(readme) for n in numbers(line) if n not in sourced]


def test_every_number_in_the_readme_is_in_reproduce_or_named_as_not_measured():
    missing = unsourced((ROOT / "README.md").read_text(), (ROOT / "REPRODUCE.md").read_text())
    assert not missing, "README numbers with no source in REPRODUCE.md:\n" + "\n".join(
        f"  {n}  in: {line[:120]}" for n, line in missing)


def test_the_check_finds_a_rounded_a_stale_and_an_invented_number_and_skips_names_and_commands():
    reproduce = "| lora | 8.17 | 1.084 |\nlargest difference 1.01e-6 (`python x.py --n 7`), 24.8 s; H100"
    readme = "\n".join(["LoRA costs 1.08x the floor (8.17 ms) and 24.8 s.",  # 1.08: rounded here, no source
                        "The difference was 9.5e-7 on an H200 with fp16.",  # stale; H200 and fp16 are names
                        "```bash", "python train.py --n 100 --lr 3e-2   # ~5.5 GB", "```",  # the comment counts
                        "See `--steps 30` and [the paper](https://arxiv.org/abs/2106.09685), Hu et al. 2021."])
    assert [n for n, _ in unsourced(readme, reproduce)] == ["1.08", "9.5e-7", "5.5"]


def test_the_readme_s_copy_cost_bound_holds_for_spectral_ft_as_it_is():
    spec = importlib.util.spec_from_file_location("copy_cost", ROOT / "scripts" / "copy_cost.py")
    copy_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy_cost)
    bound = re.search(r"at most (\d+) lines", (ROOT / "README.md").read_text())
    assert bound, "README no longer states the copy cost ('at most N lines')"
    costs = copy_cost.copy_costs()
    assert set(costs) == set(copy_cost.spectral_ft.METHODS)
    worst = max(costs, key=lambda m: costs[m][0])
    assert costs[worst][0] <= int(bound.group(1)), (worst, costs[worst])
    for method, (lines, names) in costs.items():  # each count includes the method's class and its base
        cls = copy_cost.spectral_ft.METHODS[method]
        assert {cls.__name__, "Adapter"} <= set(names) and lines > 0
