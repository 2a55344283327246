"""The layout a newcomer can read (docs/architecture.md): layers that import one way, small
modules and functions, one reader of the environment, Dagster's private names in one module,
citations that resolve inside the repository, and the modern Dagster tooling (`dg`)."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "attribution_pipeline"

#: Layer of each top-level part of the package; a module may import only its own layer and below.
LAYERS = {
    "errors": 0, "logs": 0, "settings": 0,  # foundations: no other package module
    "core": 1, "strategies": 1,  # pure Polars: neither Dagster nor a database
    "storage": 2, "exports": 2, "export_queue": 2, "analytics": 2, "demo": 2,  # I/O, no Dagster
    "assets": 3, "automation": 3, "io_managers": 3, "dagster_compat": 3,  # Dagster wiring
    "cli": 4, "definitions": 4,  # entry points
}
LAYER_NAMES = ["foundation", "pure", "I/O", "Dagster wiring", "entry point"]
FORBIDDEN_BELOW = {  # third-party packages a layer may not import
    1: ("dagster", "sqlalchemy", "pymysql", "connectorx", "duckdb"),
    2: ("dagster",),
}
#: Declarative table definitions: long by nature (one Column per Prosper202 column).
SIZE_EXCEPTIONS = {"storage/tables.py"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def dotted(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else module
    assert part in LAYERS, f"{module}: no layer declared for {part!r} (tests/test_layout.py LAYERS)"
    return LAYERS[part]


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the module's package
                base = dotted(path).split(".")
                base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                found.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.append(node.module)
                found += [f"{node.module}.{alias.name}" for alias in node.names if node.module == "attribution_pipeline"]
    return found


def test_layers_import_one_way():
    upward, third_party = [], []
    for path in modules():
        module = dotted(path)
        if module == "attribution_pipeline":
            continue
        own = layer_of(module)
        for name in imports(path):
            if name.startswith("attribution_pipeline.") and layer_of(name) > own:
                upward.append(f"{module} ({LAYER_NAMES[own]}) imports {name} ({LAYER_NAMES[layer_of(name)]})")
            for layer, banned in FORBIDDEN_BELOW.items():
                if own <= layer and name.split(".")[0] in banned:
                    third_party.append(f"{module} ({LAYER_NAMES[own]}) imports {name}")
    assert upward == []
    assert third_party == []


def test_every_layer_is_populated_and_no_two_modules_share_a_name():
    names: dict[str, list[str]] = {}
    for path in modules():
        if path.name != "__init__.py":
            names.setdefault(path.stem, []).append(str(path.relative_to(PACKAGE)))
    assert {k: v for k, v in names.items() if len(v) > 1} == {}
    assert {layer_of(dotted(p)) for p in modules() if dotted(p) != "attribution_pipeline"} == set(range(5))


def test_modules_and_functions_are_small():
    long_modules, long_functions = [], []
    for path in modules():
        rel = str(path.relative_to(PACKAGE))
        text = path.read_text()
        if rel not in SIZE_EXCEPTIONS and text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {length} lines")
    assert long_modules == []
    assert long_functions == []


def test_only_the_settings_read_the_environment():
    readers = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv") \
                    and isinstance(node.value, ast.Name) and node.value.id == "os":
                readers.append(f"{path.relative_to(PACKAGE)}:{node.lineno} os.{node.attr}")
    assert readers and all(r.startswith("settings.py:") for r in readers), readers


def test_dagster_private_names_come_from_one_module_that_still_finds_them():
    private = [f"{p.relative_to(PACKAGE)}: {name}" for p in modules() for name in imports(p)
               if name.startswith("dagster._")]
    assert private and all(line.startswith("dagster_compat.py:") for line in private), private
    # fails loudly (with the moved name) when a Dagster upgrade moves one of them
    from attribution_pipeline import dagster_compat

    for name in dagster_compat.__all__:
        assert isinstance(getattr(dagster_compat, name), type), name


def test_no_module_defining_assets_or_checks_postpones_annotations():
    offenders = [str(p.relative_to(PACKAGE)) for p in modules()
                 if "from __future__ import annotations" in p.read_text()
                 and re.search(r"@(dg\.)?(asset|asset_check|multi_asset)\b|\.asset\(|\.check\(", p.read_text())]
    assert offenders == []


# ------------------------------------------------------------------------------------------
# Docs that stand alone: every citation resolves to a document in the repository
# ------------------------------------------------------------------------------------------

DOCS = REPO / "docs"


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / line for line in listed.splitlines()
            if line.endswith((".py", ".md", ".yaml", ".toml", ".txt", ".lock")) and (REPO / line).exists()]


def headings(path: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, path.read_text(), flags=re.M))


def test_no_file_cites_a_document_outside_the_repository():
    # the pattern is assembled so that this file does not match it itself
    outside = re.compile("|".join([r"\.\./" + "shared", "shared" + "/reference", "prosper202-engine" + r"\.md"]))
    assert [str(p.relative_to(REPO)) for p in tracked_files() if outside.search(p.read_text())] == []


def test_every_decision_quirk_and_spec_citation_resolves_to_the_docs():
    decisions = headings(DOCS / "decisions.md", r"^#+ (D\d+)\.")
    quirks = headings(DOCS / "decisions.md", r"^#+ (Q\d+)\.")
    sections = headings(DOCS / "php-engine.md", r"^#+ §(\d+(?:\.\d+)?) ")
    assert {f"D{i}" for i in range(1, 21)} <= decisions and {f"Q{i}" for i in range(1, 28)} <= quirks
    unresolved = []
    for path in tracked_files():  # the two pages themselves included: they cite each other
        text = path.read_text()
        rel = str(path.relative_to(REPO))
        unresolved += [f"{rel}: {d}" for d in set(re.findall(r"\b(D\d{1,2})\b", text)) if d not in decisions]
        unresolved += [f"{rel}: {q}" for q in set(re.findall(r"\b(Q\d{1,2})\b", text)) if q not in quirks]
        unresolved += [f"{rel}: §{s}" for s in set(re.findall(r"§(\d+(?:\.\d+)?)", text)) if s not in sections]
        # every other way of citing the PHP spec ("spec" then a bare number, or "section N") is gone
        unresolved += [f"{rel}: {m}" for m in re.findall(r"\bspec (?:\d|section)[^\s,;)]*", text)]
        unresolved += [f"{rel}: {m}" for m in re.findall(r"(?<![/\w])decisions\.md", text)
                       if "docs/decisions.md" not in text]
    assert sorted(unresolved) == []


def test_every_markdown_link_to_a_repository_file_resolves():
    broken = []
    for path in [REPO / "README.md", *sorted(DOCS.glob("*.md")), REPO / "bench" / "RESULTS.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" not in target and not (path.parent / target).resolve().exists():
                broken.append(f"{path.relative_to(REPO)} -> {target}")
    assert broken == []


# ------------------------------------------------------------------------------------------
# dg: the modern Dagster command line works on the project as configured in pyproject.toml
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["check", "defs"], ["list", "defs", "--json"]])
def test_dg_loads_the_definitions(command, tmp_path):
    dg = Path(sys.executable).parent / "dg"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATTRIBUTION_", "DAGSTER_HOME"))}
    env["ATTRIBUTION_HOME"] = str(tmp_path)
    done = subprocess.run([str(dg), *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    if command[0] == "check":
        assert "All definitions loaded successfully" in done.stdout + done.stderr
    else:
        listed = done.stdout
        for name in ("attribution_writeback", "attribution_exports", "hourly_attribution",
                     "attribution_freshness", "attribution_job", "model_comparison"):
            assert name in listed, name
