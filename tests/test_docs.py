"""The documentation holds together: every page is in the site's navigation, every relative link and every
file path it names exists, the API reference covers ``mlp_xp.__all__``, the README keeps its two commands
first, and (with the ``[docs]`` extra installed) ``mkdocs build --strict`` passes.

The Python blocks of the pages run in tests/test_readme.py."""

import importlib
import inspect
import os
import pathlib
import re
import subprocess
import sys

import pytest

import mlp_xp

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"
PAGES = sorted(DOCS.rglob("*.md"))
ALL_PAGES = [README, *PAGES]
#: what CI runs, exactly as the README writes it (.ci/run, stage 1)
COMMANDS = ["pip install . && mlp-xp train", "pip install '.[test]' && pytest"]


def _text_outside_code(text):
    """``text`` without fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _links(page):
    """The relative link targets of a Markdown page (not URLs, not mail addresses)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", _text_outside_code(page.read_text()))
    return [target for target in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]


def _slug(heading):
    """The anchor Python-Markdown's toc (and, for these headings, GitHub) gives a heading."""
    heading = re.sub(r"[`*_]", "", heading).strip()
    value = re.sub(r"[^\w\s-]", "", heading).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def _anchors(page):
    return {_slug(heading) for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", page.read_text(),
                                                                            flags=re.S | re.M), re.M)}


def _nav_pages():
    """The page paths the ``nav`` of mkdocs.yml lists (read without a YAML parser, which the bare [test]
    environment lacks)."""
    text = MKDOCS.read_text()
    nav = text[text.index("\nnav:"):]
    return re.findall(r"^\s*-\s*(?:[^\n]*?:\s*)?([\w/.-]+\.md)\s*$", nav, flags=re.M)


def _directives():
    """``(page, target)`` of every ``::: target`` in docs/api/."""
    return [(page, target) for page in sorted((DOCS / "api").glob("*.md"))
            for target in re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), flags=re.M)]


def test_every_page_is_in_the_navigation_and_every_navigation_entry_exists():
    nav = _nav_pages()
    assert "index.md" in nav and "reliability.md" in nav and "api/model.md" in nav, nav
    missing = [entry for entry in nav if not (DOCS / entry).is_file()]
    assert not missing, f"mkdocs.yml lists pages that do not exist: {missing}"
    left_out = [str(page.relative_to(DOCS)) for page in PAGES if str(page.relative_to(DOCS)) not in nav]
    assert not left_out, f"pages missing from mkdocs.yml's nav: {left_out}"
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"


@pytest.mark.parametrize("page", ALL_PAGES, ids=[str(page.relative_to(ROOT)) for page in ALL_PAGES])
def test_relative_links_point_to_existing_files_and_headings(page):
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


@pytest.mark.parametrize("page", ALL_PAGES, ids=[str(page.relative_to(ROOT)) for page in ALL_PAGES])
def test_files_the_pages_name_exist(page):
    """benchmarks/..., tests/..., examples/..., mlp_xp/... and docs/... paths named anywhere in a page
    (the commands and result files of the benchmark tables among them) exist."""
    named = re.findall(r"(?<![\w/.])((?:benchmarks|tests|examples|mlp_xp|docs)/[\w./*-]*[\w*/])", page.read_text())
    missing = sorted({path for path in named if not (any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists())})
    assert not missing, f"{page.relative_to(ROOT)} names files that do not exist: {missing}"


def test_performance_page_gives_each_table_a_command_and_a_result_file():
    text = (DOCS / "performance.md").read_text()
    results = set(re.findall(r"benchmarks/results/[\w.*-]+\.json", text))
    on_disk = {f"benchmarks/results/{path.name}" for path in (ROOT / "benchmarks" / "results").glob("*.json")}
    cited = {path for path in on_disk if any(pathlib.PurePath(path).match(pattern) for pattern in results)}
    assert cited == on_disk, (f"result files docs/performance.md does not cite: {sorted(on_disk - cited)}; give each "
                              "its table (or figures), the command that wrote it and the file's path there")
    tables = re.findall(r"^```\n(.*?)^```", text, flags=re.S | re.M) + re.findall(r"^\|.*\|\n\|[-| ]+\|$", text, flags=re.M)
    assert len(tables) >= 6
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        if "```\n" in section or "\n|---" in section:
            title = section.splitlines()[0]
            assert re.search(r"(python |bash |mlp-xp )\S*", section), f"section {title!r} gives no command"
            assert "benchmarks/results/" in section, f"section {title!r} names no result file"


def test_api_reference_covers_the_public_api():
    directives = [target for _, target in _directives()]
    assert directives, "docs/api/ has no ::: directives"
    uncovered = []
    for name in mlp_xp.__all__:
        if name == "__version__":
            continue
        obj = getattr(mlp_xp, name)
        target = obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{obj.__qualname__}"
        if not any(target == directive or target.startswith(directive + ".") or directive == f"mlp_xp.{name}"
                   for directive in directives):
            uncovered.append(f"{name} ({target})")
    assert not uncovered, f"names of mlp_xp.__all__ without an API page: {uncovered}"


@pytest.mark.parametrize("page,target", _directives(), ids=[target for _, target in _directives()])
def test_api_directives_name_existing_objects(page, target):
    parts = target.split(".")
    for split in range(len(parts), 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and not error.name.startswith("mlp_xp"):
                pytest.skip(f"{module_name} needs {error.name}")
            continue
        for attribute in parts[split:]:
            assert hasattr(obj, attribute), f"{page.name}: {target} does not exist"
            obj = getattr(obj, attribute)
        return
    pytest.fail(f"{page.name}: no module in {target}")


def test_readme_is_short_and_keeps_its_two_commands_first():
    text = README.read_text()
    assert len(text.splitlines()) <= 250, f"README.md has {len(text.splitlines())} lines (at most 250)"
    bash = [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]
    assert bash[:2] == COMMANDS, f"the README's first commands are {bash[:2]}"
    assert text.index(COMMANDS[0]) < text.index("```python"), "an example comes before the two commands"
    ci = (ROOT / ".ci" / "run").read_text()
    assert all(f"\n{command}\n" in ci for command in COMMANDS), ".ci/run no longer runs the README's commands"


def test_license_file_matches_pyproject():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License") and "mlp_xp developers" in text
    assert 'license = "BSD-3-Clause"' in (ROOT / "pyproject.toml").read_text()


def test_ci_builds_the_docs_strictly():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"pip install [^\n]*\.\[docs\]", ci) and "mkdocs build --strict" in ci


def test_mkdocs_build_is_strict_and_clean(tmp_path):
    """The whole site, API reference included, builds with ``--strict`` (needs the [docs] extra)."""
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason="building the docs needs pip install '.[docs]'")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "model" / "index.html").is_file()
