"""The extension's layout and sources, checked as Slicer's build and loader will see them."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import ROOT, SLICER_MODULE

EXTENSION = ROOT / "slicer_extension"
LIBRARY = SLICER_MODULE / "LowDoseCTDenoiseLib"


def _cmake_list(text: str, variable: str) -> set[str]:
    block = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S).group(1)
    return {item.replace("${MODULE_NAME}", "LowDoseCTDenoise") for item in block.split()}


def test_extension_metadata_is_complete():
    text = (EXTENSION / "CMakeLists.txt").read_text()
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL",
                "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{key} "[^"]+"\)', text), key
    assert "add_subdirectory(LowDoseCTDenoise)" in text
    assert (EXTENSION / "LowDoseCTDenoise.png").exists()
    assert "Apache License\n                           Version 2.0" in (
        EXTENSION / "LICENSE").read_text()  # the Extensions Index wants a license file


def test_placeholder_urls_are_marked_to_do():
    """Until the repository is published, its URLs are example.com with a TODO saying what
    to set; a real address needs no TODO."""
    text = (EXTENSION / "CMakeLists.txt").read_text()
    urls = re.findall(r'set\(EXTENSION_\w*URLS? "([^"]+)"\)|set\(EXTENSION_HOMEPAGE "([^"]+)"\)',
                      text)
    urls = [a or b for a, b in urls]
    assert len(urls) == 3
    if any("example.com" in url for url in urls):
        assert "TODO(publish)" in text
    for path in ("slicer_extension/LowDoseCTDenoise.png", "docs/slicer_side_by_side.png"):
        assert path in text and (ROOT / path).exists(), path


def test_module_cmake_lists_every_script_and_resource():
    text = (SLICER_MODULE / "CMakeLists.txt").read_text()
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    on_disk = {str(p.relative_to(SLICER_MODULE)) for p in SLICER_MODULE.rglob("*.py")
               if "Testing" not in p.parts and "__pycache__" not in p.parts}
    assert scripts == on_disk
    for resource in _cmake_list(text, "MODULE_PYTHON_RESOURCES"):
        assert (SLICER_MODULE / resource).exists(), resource
    assert "slicerMacroBuildScriptedModule" in text and "add_subdirectory(Testing)" in text


def test_module_classes_and_ui_agree():
    source = (SLICER_MODULE / "LowDoseCTDenoise.py").read_text()
    classes = {n.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)}
    assert {"LowDoseCTDenoise", "LowDoseCTDenoiseWidget", "LowDoseCTDenoiseTest"} <= classes
    logic = ast.parse((LIBRARY / "logic.py").read_text())
    assert "LowDoseCTDenoiseLogic" in {n.name for n in ast.walk(logic)
                                       if isinstance(n, ast.ClassDef)}
    ui = ET.parse(SLICER_MODULE / "Resources" / "UI" / "LowDoseCTDenoise.ui")
    names = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used and used <= names, used - names


def test_slicer_loads_one_module_from_the_module_folder():
    """Slicer loads every .py file beside LowDoseCTDenoise.py as a module of its own."""
    assert [p.name for p in SLICER_MODULE.glob("*.py")] == ["LowDoseCTDenoise.py"]


def test_library_is_pure_python_39_standard_library():
    """Slicer's Python 3.9 and nothing installed: the standard library, and for the Logic
    and the self-test (logic.py, selftest.py) Slicer's own slicer, vtk, numpy and pydicom; no
    Qt anywhere in the library."""
    for path in [*LIBRARY.glob("*.py"), *SLICER_MODULE.glob("*.py")]:
        tree = ast.parse(path.read_text(), feature_version=(3, 9))  # runs on Slicer's Python
        if path.parent != LIBRARY:
            continue
        allowed = sys.stdlib_module_names - {"cgi"}
        if path.name in ("logic.py", "selftest.py"):
            allowed = allowed | {"slicer", "vtk", "numpy", "pydicom"}
        if path.name == "derived.py":  # ldct's own writer, which Slicer's numpy and pydicom run
            allowed = allowed | {"numpy", "pydicom"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, (path.name, roots)


def test_the_modules_visible_texts_are_translatable():
    """Slicer 5.6+ convention: the title, help and acknowledgement go through ``_()``
    (slicer.i18n.tr), so the module's catalogue can translate them."""
    source = (SLICER_MODULE / "LowDoseCTDenoise.py").read_text()
    assigned = {node.targets[0].attr: node.value for node in ast.walk(ast.parse(source))
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute)
                and isinstance(node.targets[0].value, ast.Attribute)
                and node.targets[0].value.attr == "parent"}
    for name in ("title", "helpText", "acknowledgementText"):
        value = assigned[name]
        assert isinstance(value, ast.Call) and getattr(value.func, "id", "") == "_", name
    assert "from slicer.i18n import tr as _" in source


def test_the_derived_dicom_writer_is_ldcts_own_file():
    """One writer: the Lib's derived.py is ldct/derived.py itself (a link the build copies),
    never a copy that could drift."""
    assert (LIBRARY / "derived.py").resolve() == (ROOT / "ldct" / "derived.py").resolve()


@pytest.mark.parametrize(("major", "minor", "loads"), [(5, 4, False), (5, 6, True),
                                                       (5, 8, True), (6, 0, True)])
def test_an_older_slicer_is_told_which_version_it_needs(major, minor, loads):
    from LowDoseCTDenoiseLib.version import check_slicer

    if loads:
        check_slicer(major, minor, f"{major}.{minor}.0")
    else:
        with pytest.raises(ImportError, match=r"needs 3D Slicer 5\.6 or newer; this is Slicer "
                                              r"5\.4\.0"):
            check_slicer(major, minor, f"{major}.{minor}.0")
