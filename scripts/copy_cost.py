"""
copy_cost.py: how many lines of spectral_ft.py a reader copies to use one method alone: the method's
class and every module-level definition it reaches (its base class, helpers, autograd Functions,
constants), found from the names each definition uses; decorators count with what they decorate.
Prints one line per method, then the largest; README's "at most N lines" is checked against it by
tests/test_readme.py.

    python scripts/copy_cost.py              # spectral_ft.py beside scripts/
    python scripts/copy_cost.py --max 150    # exit status 1 if a method needs more
"""
import argparse
import ast
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import spectral_ft  # noqa: E402

SOURCE = Path(spectral_ft.__file__)


def definitions(tree):
    """{name: node} of the module's top-level functions, classes and assigned names."""
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node
    return found


def used_names(node):
    """Every name a definition mentions, as a variable or as an attribute (self._helper, Cls.method)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}


def reached(name, defined):
    """`name` and every top-level definition it reaches, transitively (METHODS, the table of all
    methods, is not something one method needs)."""
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in defined or current == "METHODS":
            continue
        seen.add(current)
        todo.extend(used_names(defined[current]) & defined.keys())
    return seen


def line_count(node):
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return node.end_lineno - start + 1


def copy_costs(path=SOURCE):
    """{method: (lines, sorted names copied)} for every method in spectral_ft.METHODS."""
    defined = definitions(ast.parse(Path(path).read_text()))
    costs = {}
    for method, cls in spectral_ft.METHODS.items():
        names = reached(cls.__name__, defined)
        costs[method] = (sum(line_count(defined[n]) for n in names), sorted(names))
    return costs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--max", type=int, help="exit status 1 if a method needs more lines than this")
    args = parser.parse_args(argv)
    costs = copy_costs()
    for method, (lines, names) in costs.items():
        print(f"{method:<11} {lines:4d} lines: {', '.join(names)}")
    most = max(lines for lines, _ in costs.values())
    print(f"most lines to copy one method: {most}")
    return 1 if args.max is not None and most > args.max else 0


if __name__ == "__main__":
    sys.exit(main())
