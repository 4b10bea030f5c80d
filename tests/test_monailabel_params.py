"""MONAI Label's clients work unchanged against a real `ldct serve` on 127.0.0.1: the
parameters its infer tasks, Slicer plugin and OHIF plugin send (result_extension, result_dtype,
result_compress, restore_label_idx, client_id) are taken with MONAI Label's meaning, /info/
shows each model's config and parameter schema as MONAI Label shows a task's config, and every
``output=`` it defines either works or is refused with a 4xx saying why, leaving nothing behind.
The answer keys are literal tables here and the file formats' own magic bytes."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import requests
import SimpleITK as sitk
from conftest import bearer, free_port, monai_client, running, serve_command

from ldct.io import write_volume
from ldct.phantom import make_phantom

# What each model's task config shows (MONAI Label: a list is a menu, its first item the
# default; a bool a check box; a number a field) - every model the same.
CONFIG = {"strength": 1.0, "ensemble": 1, "device": ["auto", "cuda", "cpu"],
          "write_back": False, "result_extension": [".nrrd", ".nii.gz", ".nii", ".mha"],
          "result_dtype": ["float32", "int16"], "result_compress": True}
# each model's default strength (the texture sweep's rule, benchmarks/quality/texture/kernels.md)
DEFAULT_STRENGTH = {"vagan": 0.90, "ldct-nlm": 0.85}
# Every parameter a request may carry and who defines it.
SOURCES = {"strength": "ldct", "target_noise": "ldct", "ensemble": "ldct", "device": "ldct",
           "write_back": "ldct",
           "result_extension": "monailabel", "result_dtype": "monailabel",
           "result_compress": "monailabel", "restore_label_idx": "monailabel",
           "client_id": "monailabel"}
MODELS = ["alden", "ldct-gauss", "ldct-nlm", "n2n25d", "pan", "pdml", "vagan"]
# The OHIF plugin's infer (MonaiLabelClient.js, MONAI Label 0.8.5): these with output=image.
OHIF_PARAMS = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False,
               "restore_label_idx": False}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokens):
    """Every model, one phantom in the datastore ("phantom"), the server's own TMPDIR."""
    root = tmp_path_factory.mktemp("monailabel-params")
    (root / "studies").mkdir()
    (root / "tmp").mkdir()
    write_volume(make_phantom(size=96, slices=3, seed=5).volume,
                 root / "studies" / "phantom.nrrd", dtype="int16")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running(serve_command(str(root / "studies"), port), f"{url}/health",
                 root / "server.log", env={"TMPDIR": str(root / "tmp")}):
        yield {"url": url, "tmp": root / "tmp", "root": root,
               "auth": bearer(tokens["radiologist"]), "token": tokens["radiologist"]}


@pytest.fixture(scope="module")
def info(server) -> dict:
    answer = requests.get(f"{server['url']}/info/", headers=server["auth"], timeout=30)
    assert answer.status_code == 200
    return answer.json()


def slicer_params(config: dict) -> dict:
    """What MONAI Label's Slicer plugin sends for a task config (getParamsFromConfig: the
    first item of a list, else the value)."""
    return {k: v[0] if isinstance(v, list) else v for k, v in config.items()}


def _hu(path: str | Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_info_shows_each_models_config_and_parameter_schema(info):
    assert sorted(info["models"]) == MODELS
    for name, model in info["models"].items():
        config = {**CONFIG, "strength": DEFAULT_STRENGTH.get(name, 1.0)}
        assert model["type"] == "others" and model["config"] == config, name
        schema = model["params"]
        assert {k: p["x-source"] for k, p in schema["properties"].items()} == SOURCES
        assert schema["properties"]["result_extension"]["enum"][:4] == CONFIG["result_extension"]
        jsonschema.validate(slicer_params(model["config"]), schema)
        jsonschema.validate(OHIF_PARAMS, schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"strenght": 0.5}, schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"result_extension": ".png"}, schema)


def test_monailabel_client_with_each_models_advertised_config(server, info, tmp_path):
    """MONAILabelClient.infer with the config a MONAI Label client sends: 200, an NRRD,
    HU identical to a request without parameters."""
    client = monai_client(server["url"], tmp_path, server["token"])
    for name, model in info["models"].items():
        plain, _ = client.infer(name, "phantom", {})
        reference = _hu(plain)
        advertised, params = client.infer(name, "phantom", slicer_params(model["config"]))
        assert advertised.endswith(".nrrd"), (name, advertised)
        head = Path(advertised).read_bytes()[:400]
        assert head.startswith(b"NRRD") and b"encoding: gzip" in head and b"type: float" in head
        np.testing.assert_array_equal(_hu(advertised), reference, err_msg=name)
        assert params["result_extension"] == ".nrrd" and params["notes"] == []


def test_each_result_extension_is_written_in_its_format(server, tmp_path):
    """result_extension/result_compress as MONAI Label's writer means them, read back by
    their own magic bytes; the HU are those of the float32 NRRD."""
    client = monai_client(server["url"], tmp_path, server["token"])
    reference = _hu(client.infer("vagan", "phantom", {"result_compress": False})[0])

    def nifti(data: bytes) -> bool:
        return data[344:348] == b"n+1\0"  # the NIfTI-1 single-file magic

    formats = [  # extension, compress, what the file starts with / holds
        (".nrrd", False, lambda d: d.startswith(b"NRRD") and b"encoding: raw" in d[:400]),
        (".nrrd", True, lambda d: d.startswith(b"NRRD") and b"encoding: gzip" in d[:400]),
        (".nii.gz", False, lambda d: d[:2] == b"\x1f\x8b" and nifti(gzip.decompress(d))),
        (".nii", True, lambda d: nifti(d)),
        (".mha", False, lambda d: d.startswith(b"ObjectType = Image")
         and b"CompressedData = False" in d[:600]),
        (".mha", True, lambda d: b"CompressedData = True" in d[:600]),
    ]
    for extension, compress, looks_right in formats:
        path, params = client.infer("vagan", "phantom", {"result_extension": extension,
                                                         "result_compress": compress})
        assert path.endswith(extension) and params["result_extension"] == extension
        assert looks_right(Path(path).read_bytes()), (extension, compress)
        np.testing.assert_array_equal(_hu(path), reference, err_msg=extension)


def test_monailabel_plugins_label_dtype_gives_whole_hu_in_int16(server, tmp_path):
    """The Slicer plugin forces result_dtype uint8 (made for label maps): CT numbers do not
    fit, so the result is int16 whole HU and the answer says so."""
    client = monai_client(server["url"], tmp_path, server["token"])
    reference = _hu(client.infer("vagan", "phantom", {})[0])
    assert reference.min() < -900  # air: what uint8 would have lost
    path, params = client.infer("vagan", "phantom", {"result_extension": ".nrrd",
                                                     "result_dtype": "uint8"})
    assert b"type: short" in Path(path).read_bytes()[:400]
    np.testing.assert_array_equal(_hu(path), np.rint(reference).astype(np.int16))
    assert params["result_dtype"] == "int16"
    assert "uint8 cannot hold CT numbers" in params["notes"][0]


def test_an_ohif_shaped_request_gets_its_image(server, tmp_path):
    """The OHIF plugin's request: a multipart form with only params, ?image=ID&output=image."""
    client = monai_client(server["url"], tmp_path, server["token"])
    reference = _hu(client.infer("pan", "phantom", {})[0])
    answer = requests.post(f"{server['url']}/infer/pan", params={"image": "phantom",
                                                                 "output": "image"},
                           files={"params": (None, json.dumps(OHIF_PARAMS))},
                           headers=server["auth"], timeout=120)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.content.startswith(b"NRRD") and b"encoding: raw" in answer.content[:400]
    (tmp_path / "ohif.nrrd").write_bytes(answer.content)
    np.testing.assert_array_equal(_hu(tmp_path / "ohif.nrrd"), np.rint(reference))


def _left(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir())


def _settled(tmp: Path) -> list[str]:
    """The server's temp folder once the clean-up that runs after each answer is sent has
    removed every upload and result (or 30 s have passed)."""
    deadline = time.monotonic() + 30
    while any(n.startswith("ldct-") for n in _left(tmp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _left(tmp)


def test_every_monailabel_output_works_or_is_refused_leaving_nothing(server, tmp_path):
    url, auth = f"{server['url']}/infer/vagan", server["auth"]
    upload = write_volume(make_phantom(size=96, slices=3, seed=9).volume,
                          tmp_path / "scan.nrrd", dtype="int16").read_bytes()
    before = _settled(server["tmp"])
    assert not any(n.startswith("ldct-") for n in before)

    def post(query, files=None):
        return requests.post(url, params=query, headers=auth, timeout=120,
                             files={"file": ("scan.nrrd", upload), **(files or {})})

    refused = [
        ({"output": "dicom_seg"}, None, "a denoiser has no segmentation"),
        ({"output": "nifti"}, None, "ask one of image, json, all"),
        ({"output": "IMAGE"}, None, "ask one of image, json, all"),
        ({"session_id": "abc"}, None, "this server keeps no sessions"),
        ({}, {"label": ("label.nrrd", upload)}, "a denoiser takes no label"),
    ]
    for query, files, why in refused:
        answer = post(query, files)
        assert answer.status_code == 422 and why in answer.json()["detail"], answer.text[:300]
        assert _left(server["tmp"]) == before, query
    answers = {output: post({} if output is None else {"output": output})
               for output in ("image", "json", "all", None)}
    assert all(a.status_code == 200 for a in answers.values())
    assert answers["image"].content.startswith(b"NRRD")
    assert answers["json"].json()["result_extension"] == ".nrrd"
    for output in ("all", None):  # MONAI Label's multipart: params and the image
        assert answers[output].headers["content-type"].startswith("multipart/form-data")
        assert b'name="params"' in answers[output].content
        assert b'name="image"' in answers[output].content and b"NRRD0" in answers[output].content
    assert _settled(server["tmp"]) == before


def test_wrong_monailabel_values_are_refused_with_the_choices(server):
    cases = [({"result_extension": ".png"}, "result_extension must be one of .nrrd, .nii.gz, "
                                            ".nii, .mha"),
             ({"result_extension": ".seg.nrrd"}, "result_extension must be one of"),
             ({"result_dtype": "float64"}, "result_dtype must be one of float32, int16"),
             ({"result_compress": "false"}, "result_compress must be true or false"),
             ({"restore_label_idx": 1}, "restore_label_idx must be true or false")]
    for params, message in cases:
        answer = requests.post(f"{server['url']}/infer/vagan",
                               params={"image": "phantom", "output": "json"},
                               data={"params": json.dumps(params)}, headers=server["auth"],
                               timeout=60)
        assert answer.status_code == 422 and message in answer.json()["detail"], answer.text
