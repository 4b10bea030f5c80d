"""MRML side of the module: volume node -> gzip NRRD upload -> result node -> the views.

The one module of the package that imports ``slicer`` (MRML core and logic), ``vtk`` and
``numpy``; no Qt: it runs inside Slicer and, with the PyPI ``slicer-core`` package, on plain
MRML scenes in tests. It lives here, not beside LowDoseCTDenoise.py, because Slicer loads
every .py file of the module folder as a module of its own.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import pydicom
import slicer
import vtk
from vtk.util import numpy_support

from .derived import denoising, match_sources, write_derived_series
from .display import (
    LAYOUT_ID_BASE,
    LAYOUTS,
    ORIGINAL,
    RESULT,
    VOLUME_PRESET,
    WINDOW_PRESETS,
    difference_name,
    layout_xml,
    result_name,
    strength_label,
    symmetric_window,
    view_label,
)
from .state import NODE_ROLES, PanelState
from .transfer import NrrdHeader, read_nrrd_into, write_nrrd

MODULE_NAME = "LowDoseCTDenoise"
LEFT, RIGHT = "Red", "Yellow"  # the top row of every layout: original | denoised
GEOMETRY_TOLERANCE_MM = 1e-3  # NRRD text round trip; anything larger is a real mismatch
DIFFERENCE_SAMPLES = 200_000
STUDY_ATTRIBUTE = "LowDoseCTDenoise.studyItem"
DIFFERENCE_REFERENCE = "LowDoseCTDenoise.difference"  # result node -> its difference node
MODEL_ATTRIBUTE, STRENGTH_ATTRIBUTE = "LowDoseCTDenoise.model", "LowDoseCTDenoise.strength"
SOURCE_ATTRIBUTE = "LowDoseCTDenoise.source"  # result -> the ID of the input it denoises
VERSION_ATTRIBUTE = "LowDoseCTDenoise.version"  # the model's weights version on the server
INSTANCE_UIDS = "DICOM.instanceUIDs"  # set on a volume by Slicer's DICOM module


class GeometryMismatch(RuntimeError):
    """The server's result does not cover the input's voxels; it is not loaded."""


def _matrix(node) -> np.ndarray:
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def _copy_geometry(source, target) -> None:
    """Spacing, origin and axes exactly as ``source`` stores them.

    A 4x4 matrix round trip is not bit-exact, and the volume node ignores changes below a
    tolerance (so a value read back from NRRD text would stay): each setter first gets a
    clearly different value, then the source's.
    """
    directions, flipped = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    source.GetIJKToRASDirectionMatrix(directions)
    flipped.DeepCopy(directions)
    flipped.SetElement(0, 0, -directions.GetElement(0, 0) or 1.0)
    spacing, origin = source.GetSpacing(), source.GetOrigin()
    target.SetIJKToRASDirectionMatrix(flipped)
    target.SetIJKToRASDirectionMatrix(directions)
    target.SetSpacing([2 * v + 1 for v in spacing])
    target.SetSpacing(spacing)
    target.SetOrigin([2 * v + 1 for v in origin])
    target.SetOrigin(origin)


def blend(original: np.ndarray, full: np.ndarray, strength: float, out: np.ndarray) -> None:
    """``out`` := ``original + strength * (full - original)`` rounded to whole HU (int16), as
    the server blends and as the derived DICOM series stores it; a slice at a time, so the
    float work never needs a full-size temporary."""
    for k in range(out.shape[0]):
        mixed = full[k] - original[k].astype(np.float32)
        mixed *= np.float32(strength)
        mixed += original[k]
        np.rint(mixed, out=mixed)
        out[k] = np.clip(mixed, -32768, 32767)


def unblend(original: np.ndarray, shown: np.ndarray, strength: float, out: np.ndarray) -> None:
    """``out`` := the full-strength voxels of ``shown``, a blend at ``strength``: ``original +
    (shown - original) / strength`` (the blend is linear, so this is exact but for the int16
    rounding, which grows as 1/strength); at 0 the blend holds none of them: ``out`` :=
    ``shown``."""
    if strength == 0.0:
        out[...] = shown
    else:
        blend(original, shown, 1.0 / strength, out)


@dataclass(frozen=True)
class VolumeExport:
    """An input volume checked for upload: the node's own voxels (a view) and the header.

    Integer voxels (a CT from DICOM: int16) are written as they are; float voxels are rounded
    to int16 HU a slice at a time, so no full-size copy is ever made.
    """

    name: str  # the node's, for the consent question; never sent
    header: NrrdHeader
    voxels: np.ndarray

    def slices(self) -> Iterator[np.ndarray]:
        for voxels in self.voxels:
            if voxels.dtype.kind == "f":
                voxels = np.clip(np.rint(voxels), -32768, 32767).astype(np.int16)
            yield voxels

    def write(self, path: str | Path, on_slice: Optional[Callable[[float], None]] = None
              ) -> Path:
        """The upload file at ``path``; ``on_slice(fraction)`` may raise to stop."""
        return write_nrrd(path, self.header, self.slices(), on_slice)


@dataclass(frozen=True)
class ReadResult:
    """The server's result read and blended off the GUI thread: plain VTK images in no scene
    (the GUI thread only puts them in a node)."""

    header: NrrdHeader
    full: object  # vtkImageData, int16: the server's full-strength voxels
    shown: object  # vtkImageData, int16: the blend at ``strength`` (``full`` itself at 1)
    strength: float


@dataclass(frozen=True)
class Reblend:
    """A shown pair blended again at another strength on the worker: the new image is in no
    node yet (:meth:`LowDoseCTDenoiseLogic.apply_blend` puts it in ``result``)."""

    original: object  # the input node
    result: object  # the result node
    strength: float
    image: object  # vtkImageData, int16
    difference: object = None  # vtkImageData, int16: ``image`` - original, when one was shown
    window: tuple = ()  # the difference's (width, level)


def subtract(after: np.ndarray, before: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """``out`` := ``after - before`` in int16, a slice at a time (no full-size wider
    temporary); returns its symmetric grey window (width, level) from a sample."""
    for k in range(out.shape[0]):
        out[k] = np.clip(after[k].astype(np.int32) - before[k], -32768, 32767)
    return symmetric_window(out.ravel()[::max(1, out.size // DIFFERENCE_SAMPLES)].tolist())


def _image(shape: tuple) -> tuple[object, np.ndarray]:
    """A new int16 vtkImageData of ``shape`` (slices, rows, columns) and its voxels as numpy."""
    image = vtk.vtkImageData()
    image.SetDimensions(shape[2], shape[1], shape[0])
    image.AllocateScalars(vtk.VTK_SHORT, 1)
    voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return image, voxels.reshape(shape)


def read_result(path: str | Path, original: np.ndarray, strength: float,
                blended: bool = False) -> ReadResult:
    """The server's int16 NRRD decompressed straight into a new image, and its blend with
    ``original`` (the input's voxels) at ``strength``: run on the worker thread (no scene, no
    MRML), so the GUI thread only makes the node. Another size or type is refused before a
    voxel is read. ``blended``: the server already blended the file at ``strength`` (a noise
    level chose it): it is shown as it is and the full-strength voxels are recovered from it
    (:func:`unblend`) for another strength."""
    images: dict = {}

    def allocate(header: NrrdHeader) -> memoryview:
        if header.type != "int16" or header.sizes != tuple(reversed(original.shape)):
            raise GeometryMismatch(f"The server returned a volume with another geometry or type "
                                   f"({header.type}, {header.sizes}; the input: "
                                   f"{tuple(reversed(original.shape))}); it was not loaded. "
                                   "Report this with the server log.")
        images["full"] = _image(original.shape)
        return memoryview(images["full"][1])

    header = read_nrrd_into(path, allocate)
    if blended:
        full, voxels = _image(original.shape)
        unblend(original, images["full"][1], strength, voxels)
        return ReadResult(header, full, images["full"][0], strength)
    full, shown = images["full"][0], images["full"][0]
    if strength != 1.0:
        shown, voxels = _image(original.shape)
        blend(original, images["full"][1], strength, voxels)
    return ReadResult(header, full, shown, strength)


@dataclass(frozen=True)
class DicomSeries:
    """A CT series read from its DICOM files off the GUI thread: int16 HU voxels in a plain
    VTK image, IJK -> RAS, and what places it in the subject hierarchy."""

    image: object  # vtkImageData, int16 HU
    ijk_to_ras: np.ndarray
    headers: list  # pydicom datasets (no pixels), in slice order
    name: str  # "<series number>: <series description>", as Slicer's DICOM module names it


def read_series(files: list) -> DicomSeries:
    """The CT series of ``files`` (one series, one orientation), slices sorted along their
    normal, HU = stored value x slope + intercept rounded to int16."""
    slices = [pydicom.dcmread(str(f)) for f in files]
    if len({str(ds.get("SeriesInstanceUID", "")) for ds in slices}) != 1:
        raise ValueError("The files are not one DICOM series.")
    row, column = (np.array(ds, dtype=float) for ds in (
        slices[0].ImageOrientationPatient[:3], slices[0].ImageOrientationPatient[3:]))
    normal = np.cross(row, column)
    slices.sort(key=lambda ds: float(np.dot(normal, np.array(ds.ImagePositionPatient, float))))
    first = np.array(slices[0].ImagePositionPatient, float)
    step = (np.array(slices[-1].ImagePositionPatient, float) - first) / (len(slices) - 1) \
        if len(slices) > 1 else normal * float(slices[0].get("SliceThickness", 1) or 1)
    spacing = [float(v) for v in slices[0].PixelSpacing]  # (between rows, between columns)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = (row * spacing[1], column * spacing[0],
                                                      step, first)
    image, voxels = _image((len(slices), int(slices[0].Rows), int(slices[0].Columns)))
    for k, ds in enumerate(slices):
        hu = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(
            ds.get("RescaleIntercept", 0))
        voxels[k] = np.clip(np.rint(hu), -32768, 32767)
        del ds.PixelData
    header = slices[0]
    return DicomSeries(image, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, slices,
                       f"{header.get('SeriesNumber', '')}: {header.get('SeriesDescription', '')}")


@dataclass(frozen=True)
class ShownResult:
    """The denoised result shown, as Send to PACS needs it."""

    name: str
    model: str
    strength: float
    series: str  # the input's DICOM SeriesInstanceUID; "" when it was not loaded from DICOM


@dataclass(frozen=True)
class DerivedSeries:
    """The shown result written as a derived DICOM series of its input's study."""

    folder: Path
    files: list
    name: str  # the result's
    description: str  # its SeriesDescription


def _weakly(method: Callable[..., None], with_node: bool = False) -> Callable[..., None]:
    """An observer callback that holds its Logic weakly. A strong one (a bound method) makes a
    cycle through VTK (scene -> observer -> Logic -> scene) that Python's garbage collector
    may tear down in any order, calling back a half-cleared Logic; weakly held, a Logic left
    without cleanup() is simply freed and its callbacks do nothing. ``with_node``: the event
    carries a node (the scene's node events), passed on as a third argument."""
    ref = weakref.WeakMethod(method)

    def callback(caller, event, *node) -> None:
        bound = ref()
        if bound is not None:
            bound(caller, event, *node)
    if with_node:
        callback.CallDataType = vtk.VTK_OBJECT
    return callback


class LowDoseCTDenoiseLogic(slicer.util.VTKObservationMixin):
    """Everything the module does to the scene; the widget only wires buttons to it.

    Its observers (the scene's close and import, the shown volumes' windows) go through
    Slicer's VTKObservationMixin: those on volumes are removed when the scene closes or
    another pair is shown, all of them by :meth:`cleanup`.
    """

    def __init__(self, scene=None, find_instance: Optional[Callable[[str], str]] = None
                 ) -> None:
        """``find_instance``: the file of a SOP instance UID (Slicer's DICOM database's
        ``fileForInstance`` by default), where the input's source headers are read."""
        slicer.util.VTKObservationMixin.__init__(self)
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.find_instance = find_instance or (lambda uid: slicer.dicomDatabase.fileForInstance(
            uid))
        self.on_scene_closed: Callable[[], None] = lambda: None  # the panel follows
        self.on_scene_loaded: Callable[[], None] = lambda: None  # the panel restores itself
        self._window_changed = _weakly(self._on_window_changed)
        self.addObserver(self.scene, slicer.vtkMRMLScene.EndCloseEvent,
                         _weakly(self._scene_closed))
        self.addObserver(self.scene, slicer.vtkMRMLScene.EndImportEvent,
                         _weakly(self._scene_loaded))
        self.on_node_removed: Callable[[object], None] = lambda node: None  # the panel follows
        self.addObserver(self.scene, slicer.vtkMRMLScene.NodeAboutToBeRemovedEvent,
                         _weakly(self._node_removed, with_node=True))
        self.own_windows: dict[str, tuple[float, float]] = {}  # node id -> window it came with
        self._own_labels: dict[str, str] = {}  # view -> its label before the module's
        self._synced: tuple = ()  # the two display nodes whose windows follow each other
        self._syncing = False
        self.pair: Optional[tuple[object, object]] = None  # (original, denoised) on show
        self.layout = next(iter(LAYOUTS))
        self._flickered = False  # the original's views show the denoised volume
        self._difference = None  # the difference shown in the result's views, if any
        self._full: Optional[tuple[object, np.ndarray]] = None  # last result, full strength
        self._user_views: Optional[tuple] = None  # the user's layout and views, on enter

    # -- input and result ---------------------------------------------------------------
    def export_input(self, node, path: str | Path) -> Path:
        """Write ``node`` as the upload file (gzip NRRD in HU with its geometry) at once."""
        return self.prepare_export(node).write(path)

    def prepare_export(self, node) -> VolumeExport:
        """``node`` checked and ready to write (a worker may write it): its own voxels, no copy.

        Refuses what is not a CT volume before anything is written or sent; only a float
        volume is scanned for NaN (integers cannot hold one), a slice at a time.
        """
        if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.GetImageData() is None:
            raise ValueError("Select a CT volume (a scalar volume with image data) first.")
        if node.GetParentTransformNode() is not None:
            raise ValueError(f"'{node.GetName()}' is under a transform; harden the transform "
                             "(Data module, right-click > Harden transform) and try again.")
        voxels = slicer.util.arrayFromVolume(node)
        if voxels.ndim != 3 or min(voxels.shape[1:]) < 64:
            raise ValueError(f"'{node.GetName()}' ({voxels.shape}) is not a CT volume: need slices "
                             "of at least 64x64 pixels.")
        if voxels.dtype.kind not in "iuf":
            raise ValueError(f"'{node.GetName()}' has {voxels.dtype} voxels; a CT volume has "
                             "numbers in HU.")
        if voxels.dtype.kind == "f" and not all(np.isfinite(s).all() for s in voxels):
            raise ValueError(f"'{node.GetName()}' has NaN or infinite voxels; fix the volume "
                             "first.")
        lps = np.diag([-1.0, -1.0, 1.0]) @ _matrix(node)[:3]  # ITK's space: LPS
        header = NrrdHeader("int16" if voxels.dtype.kind == "f" else voxels.dtype.name,
                            tuple(reversed(voxels.shape)), tuple(map(tuple, lps[:, :3].T)),
                            tuple(lps[:, 3]))
        return VolumeExport(node.GetName(), header, voxels)

    def study_of(self, node) -> int:
        """The subject-hierarchy item ``node`` is under (its study when loaded from DICOM);
        a job captures it when it starts."""
        sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(self.scene)
        item = sh.GetItemByDataNode(node)
        return sh.GetItemParent(item) if item else 0

    def in_scene(self, node) -> bool:
        """Whether ``node`` is still in the scene (not deleted while a job ran)."""
        return node.GetScene() is not None and self.scene.GetNodeByID(node.GetID()) is node

    def results_of(self, input_node) -> list:
        """The denoised results of ``input_node`` in the scene, oldest first."""
        kind = "vtkMRMLScalarVolumeNode"
        nodes = [self.scene.GetNthNodeByClass(k, kind)
                 for k in range(self.scene.GetNumberOfNodesByClass(kind))]
        return [node for node in nodes if node.GetAttribute(MODEL_ATTRIBUTE)
                and node.GetAttribute(SOURCE_ATTRIBUTE) == input_node.GetID()]

    def remove_results(self, input_node, keep=None) -> int:
        """Remove the results of ``input_node`` (but ``keep``) and their differences from the
        scene; returns how many results were removed."""
        results = [node for node in self.results_of(input_node) if node is not keep]
        for node in results:
            difference = node.GetNodeReference(DIFFERENCE_REFERENCE)
            if difference is not None:
                self._remove_volume(difference)
            self._remove_volume(node)
        return len(results)

    read_series = staticmethod(read_series)  # the worker reads the files it downloaded

    def add_series(self, series: DicomSeries):
        """``series`` as a volume node under its patient and study in the subject hierarchy
        (the items of the same patient ID / study UID reused), with the DICOM UIDs Slicer's
        DICOM module sets: the series item's UID, the node's ``DICOM.instanceUIDs``."""
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", series.name)
        node.SetAndObserveImageData(series.image)
        matrix = vtk.vtkMatrix4x4()
        for i in range(4):
            for j in range(4):
                matrix.SetElement(i, j, series.ijk_to_ras[i, j])
        node.SetIJKToRASMatrix(matrix)
        node.CreateDefaultDisplayNodes()
        node.SetAttribute("DICOM.instanceUIDs", " ".join(
            str(ds.SOPInstanceUID) for ds in series.headers))
        header, constants = series.headers[0], slicer.vtkMRMLSubjectHierarchyConstants
        sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(self.scene)
        uid = constants.GetDICOMUIDName()

        def item_for(parent: int, key: str, name: str, create) -> int:
            found = sh.GetItemByUID(uid, key) if key else 0
            if found and sh.GetItemParent(found) == parent:
                return found
            item = create(parent, name)
            if key:
                sh.SetItemUID(item, uid, key)
            return item

        patient = item_for(sh.GetSceneItemID(), str(header.get("PatientID", "")),
                           str(header.get("PatientName", "")) or "Anonymous",
                           sh.CreateSubjectItem)
        sh.SetItemAttribute(patient, constants.GetDICOMPatientIDAttributeName(),
                            str(header.get("PatientID", "")))
        study = item_for(patient, str(header.get("StudyInstanceUID", "")),
                         str(header.get("StudyDescription", "")) or "Study",
                         sh.CreateStudyItem)
        sh.SetItemAttribute(study, constants.GetDICOMStudyDateAttributeName(),
                            str(header.get("StudyDate", "")))
        item = sh.GetItemByDataNode(node) or sh.CreateItem(study, node)
        sh.SetItemParent(item, study)
        sh.SetItemUID(item, uid, str(header.SeriesInstanceUID))
        for key in ("Modality", "SeriesNumber", "SeriesDescription"):
            sh.SetItemAttribute(item, f"DICOM.{key}", str(header.get(key, "")))
        return node

    def read_result(self, path: str | Path, export: VolumeExport, strength: float,
                    blended: bool = False) -> ReadResult:
        """:func:`read_result` for the input ``export`` (checked on the GUI thread when the
        job started): what the panel's worker runs after the download."""
        return read_result(path, export.voxels, strength, blended)

    def load_result(self, result: str | Path | ReadResult, input_node, model: str,
                    strength: float = 1.0, study: int = 0, replace: bool = False,
                    version: str = ""):
        """A new volume node with the input's geometry, named ``<input> <model> s=<strength>``
        (unique in the scene): the server's full-strength result (a file, or already read and
        blended by the worker) blended with the input, placed under ``study`` (the input's when
        its job started; 0: where the input is now). ``replace``: the input's earlier results
        are removed."""
        read = result if isinstance(result, ReadResult) else read_result(
            result, slicer.util.arrayFromVolume(input_node), strength)
        lps = np.eye(4)
        lps[:3, :3] = np.array(read.header.directions, dtype=float).T
        lps[:3, 3] = read.header.origin
        got = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # ITK's LPS -> Slicer's RAS
        if np.abs(_matrix(input_node) - got).max() > GEOMETRY_TOLERANCE_MM:
            raise GeometryMismatch("The server returned a volume with another geometry; it was "
                                   "not loaded. Report this with the server log.")
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        node.SetAndObserveImageData(read.shown)
        _copy_geometry(input_node, node)  # exactly the input's, bit for bit
        node.SetAttribute(MODEL_ATTRIBUTE, model)
        node.SetAttribute(VERSION_ATTRIBUTE, version)
        node.SetAttribute(SOURCE_ATTRIBUTE, input_node.GetID())
        if replace:
            self.remove_results(input_node, keep=node)
        node.CreateDefaultDisplayNodes()
        # the downloaded voxels stay referenced here for a new strength (released later)
        self._full = (node, numpy_support.vtk_to_numpy(
            read.full.GetPointData().GetScalars()).reshape(
            slicer.util.arrayFromVolume(input_node).shape))
        self._blend(input_node, node, strength, study, computed=read.strength == strength)
        return node

    def set_strength(self, strength: float) -> str:
        """Blend the shown pair again at ``strength``, here and at once (scripts; the panel
        runs :meth:`blend_job` on its worker): ``original + strength * (full result -
        original)``, as the server blends. Returns the result's new name."""
        return self.apply_blend(self.blend_job(strength)())

    def blend_job(self, strength: float) -> Callable[[], Reblend]:
        """The shown pair's blend at ``strength`` as a function for the panel's worker: it
        reads no scene and makes a new int16 image (:func:`blend`), which
        :meth:`apply_blend` then puts in the result node on the GUI thread."""
        original, denoised = self._require_pair()
        node, full = self._full or (None, None)
        if node is not denoised:
            raise RuntimeError("The full-strength result of this pair is gone; denoise again.")
        voxels = slicer.util.arrayFromVolume(original)  # keeps the input's array alive
        with_difference = denoised.GetNodeReference(DIFFERENCE_REFERENCE) is not None

        def run() -> Reblend:
            image, out = _image(voxels.shape)
            blend(voxels, full, strength, out)
            if not with_difference:
                return Reblend(original, denoised, strength, image)
            diff_image, diff = _image(voxels.shape)
            window = subtract(out, voxels, diff)
            return Reblend(original, denoised, strength, image, diff_image, window)
        return run

    def apply_blend(self, done: Reblend) -> str:
        """The worker's blend shown (GUI thread): only when its pair is still the one shown
        (a result deleted or replaced meanwhile gets nothing). Returns the result's new
        name."""
        if self.pair != (done.original, done.result) or not (
                self.in_scene(done.original) and self.in_scene(done.result)):
            raise RuntimeError(f"'{done.result.GetName()}' was deleted or replaced while "
                               f"strength {done.strength:g} was blended: nothing was changed.")
        done.result.SetAndObserveImageData(done.image)
        self._blend(done.original, done.result, done.strength, computed=True)
        shown = done.result.GetNodeReference(DIFFERENCE_REFERENCE)
        if shown is not None:  # shown next to this result: it follows the strength
            if done.difference is not None:
                shown.SetAndObserveImageData(done.difference)
            self._fill_difference(done.original, done.result, shown,
                                  done.window if done.difference is not None else None)
        self._fill_views()  # the labels say the new strength
        return done.result.GetName()

    def _blend(self, original, result, strength: float, study: int = 0,
               computed: bool = False) -> None:
        """``result`` := the blend at ``strength`` rounded to whole HU in int16, as DICOM will
        store it (:func:`blend`), in the node's own new array (unless ``computed``: the worker
        did it); at 1 the downloaded voxels are shown as they are."""
        node, full = self._full or (None, None)
        if node is not result:
            raise RuntimeError("The full-strength result of this pair is gone; denoise again.")
        shown = slicer.util.arrayFromVolume(result)
        if not computed and (strength != 1.0 or not np.shares_memory(shown, full)):
            result.GetImageData().AllocateScalars(vtk.VTK_SHORT, 1)
            blend(slicer.util.arrayFromVolume(original), full, strength,
                  slicer.util.arrayFromVolume(result))
            slicer.util.arrayFromVolumeModified(result)
        result.SetAttribute(STRENGTH_ATTRIBUTE, f"{strength:g}")
        model = result.GetAttribute(MODEL_ATTRIBUTE)
        self._rename(result, result_name(original.GetName(), model, strength))
        self._place_as_derived(result, original, f"Denoised with {model} "
                                                 f"({strength_label(strength)}) by ldct", study)

    def release_full(self) -> bool:
        """Free the full-strength voxels kept for local re-blending (as large as the input);
        the result keeps its blend. Returns whether there was something to free."""
        if self._full is None or np.shares_memory(
                slicer.util.arrayFromVolume(self._full[0]), self._full[1]):
            return False  # nothing kept, or shown at strength 1: the full voxels are the node's
        self._full = None
        return True

    @property
    def shows_result(self) -> bool:
        """The pair shown is an original and its denoised result (not a blinded study pair,
        which no compare tool may touch)."""
        return self._shows_result()

    def show_study_item(self, files: dict[str, Path], window: tuple[float, float]) -> list:
        """A reader-study item, blinded: volumes named only "A" (and "B") replace the previous
        item's, shown side by side (or A alone) in the study's window, views linked."""
        self.clear_study_item()
        nodes = []
        for label in sorted(files):
            node = self._read(files[label])
            node.SetName(label)
            node.SetAttribute(STUDY_ATTRIBUTE, "1")
            node.CreateDefaultDisplayNodes()
            nodes.append(node)
        if len(nodes) == 2:
            self.show_side_by_side(nodes[0], nodes[1], window)
        else:
            self._layout_node().SetViewArrangement(
                slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
            self.composite_node(LEFT).SetBackgroundVolumeID(nodes[0].GetID())
            self._set_label(LEFT, nodes[0].GetName())
            self._set_window(nodes[0].GetDisplayNode(), *window)
        return nodes

    def clear_study_item(self) -> None:
        """Remove the volumes of the previous study item (they are the server's copies)."""
        self._unsync()
        self.pair = None
        kind = "vtkMRMLScalarVolumeNode"
        nodes = [self.scene.GetNthNodeByClass(k, kind)
                 for k in range(self.scene.GetNumberOfNodesByClass(kind))]
        for node in nodes:
            if node.GetAttribute(STUDY_ATTRIBUTE):
                self._remove_volume(node)

    def difference(self, original, denoised):
        """``denoised - original`` as an int16 volume (both are whole HU) with a symmetric
        grey window around 0, tied to ``denoised`` by a node reference (never found by its
        name); made when shown, removed when hidden."""
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        image = vtk.vtkImageData()
        image.SetDimensions(original.GetImageData().GetDimensions())
        image.AllocateScalars(vtk.VTK_SHORT, 1)
        node.SetAndObserveImageData(image)
        _copy_geometry(original, node)
        node.CreateDefaultDisplayNodes()
        denoised.SetNodeReferenceID(DIFFERENCE_REFERENCE, node.GetID())
        self._fill_difference(original, denoised, node)
        return node

    def _fill_difference(self, original, denoised, node,
                         window: Optional[tuple[float, float]] = None) -> None:
        """The difference's voxels, window and name from the result as it is now (``window``
        given: the worker already filled its voxels)."""
        if window is None:
            window = subtract(slicer.util.arrayFromVolume(denoised),
                              slicer.util.arrayFromVolume(original),
                              slicer.util.arrayFromVolume(node))
            slicer.util.arrayFromVolumeModified(node)
        self._set_window(node.GetDisplayNode(), *window)
        self._rename(node, difference_name(denoised.GetName()))
        self._place_as_derived(node, original, f"Difference: '{denoised.GetName()}' minus "
                                               "the original")

    def _place_as_derived(self, node, source, description: str, study: int = 0) -> None:
        """In the subject hierarchy beside ``source`` (under ``study``, the one its job
        captured, else its own study and patient), with DICOM series attributes that say it
        is derived from it."""
        sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(self.scene)
        source_item = sh.GetItemByDataNode(source)
        parent = sh.GetItemParent(source_item) if source_item else sh.GetSceneItemID()
        if study and sh.GetItemName(study):  # the study the job captured still exists
            parent = study
        item = sh.GetItemByDataNode(node) or sh.CreateItem(parent, node)
        sh.SetItemParent(item, parent)
        modality = sh.GetItemAttribute(source_item, "DICOM.Modality") if source_item else ""
        for key, value in (("Modality", modality or "CT"),
                           ("SeriesDescription", node.GetName()),
                           ("ImageType", "DERIVED\\SECONDARY"),
                           ("DerivationDescription", description)):
            sh.SetItemAttribute(item, f"DICOM.{key}", value)

    # -- PACS ---------------------------------------------------------------------------
    def shown_result(self) -> ShownResult:
        """The result of the pair shown: its model and strength, and the input's series
        UID (set by Slicer's DICOM module on the series' subject-hierarchy item)."""
        original, denoised = self._require_result()
        sh = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(self.scene)
        item = sh.GetItemByDataNode(original)
        uid = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMUIDName()
        return ShownResult(denoised.GetName(), denoised.GetAttribute(MODEL_ATTRIBUTE),
                           float(denoised.GetAttribute(STRENGTH_ATTRIBUTE)),
                           sh.GetItemUID(item, uid) if item else "")

    def write_derived(self, folder: str | Path) -> DerivedSeries:
        """The shown result, voxel for voxel as displayed (int16 whole HU), as a derived DICOM
        series of its input's study in the empty ``folder`` (`derived`: the same writer as
        the server's write-back and ``ldct denoise``). The input must have been loaded by
        Slicer's DICOM module: each slice takes its source slice's header and points at it."""
        original, denoised = self._require_result()
        uids = (original.GetAttribute(INSTANCE_UIDS) or "").split()
        if not uids:
            raise ValueError(f"'{original.GetName()}' was not loaded from DICOM, so there is no "
                             "study to add the result to: load the CT with the DICOM module "
                             "and denoise again.")
        headers = []
        for uid in uids:
            path = self.find_instance(uid)
            if not path:
                raise ValueError(f"The DICOM file of '{original.GetName()}' (instance {uid}) is "
                                 "no longer in Slicer's DICOM database; import it again.")
            headers.append(pydicom.dcmread(path, stop_before_pixels=True))
        lps = np.diag([-1.0, -1.0, 1.0]) @ _matrix(denoised)[:3]
        voxels = slicer.util.arrayFromVolume(denoised)
        sources = match_sources(headers, lps[:, 3], lps[:, :3], voxels.shape[0])
        made_by = denoising(str(sources[0].get("SeriesDescription", "CT")),
                            denoised.GetAttribute(MODEL_ATTRIBUTE),
                            denoised.GetAttribute(VERSION_ATTRIBUTE) or "",
                            float(denoised.GetAttribute(STRENGTH_ATTRIBUTE)))
        files = write_derived_series(voxels, sources, folder, made_by)
        return DerivedSeries(Path(folder), files, denoised.GetName(), made_by.description)

    def _require_result(self):
        """The pair shown, when its second volume is a denoised result (not a study item)."""
        original, denoised = self._require_pair()
        if not self._shows_result():
            raise RuntimeError("The pair shown is no denoised result: denoise a volume first.")
        return original, denoised

    # -- views --------------------------------------------------------------------------
    def show_side_by_side(self, original, denoised,
                          preset: str | tuple[float, float] = "Liver",
                          layout: str = "") -> None:
        """Original and denoised in the hot-linked views of ``layout`` (a name in LAYOUTS;
        the last one used by default), one window on all."""
        self.pair, self._flickered, self._difference = (original, denoised), False, None
        for node in self.pair:
            node.CreateDefaultDisplayNodes()
            self._remember_own_window(node)
        self.set_layout(layout or self.layout)
        self.apply_window(preset)
        self._sync_windows(original.GetDisplayNode(), denoised.GetDisplayNode())

    def set_layout(self, name: str) -> None:
        """Arrange the views as ``LAYOUTS[name]``: each shows the original or the denoised
        volume of the pair, labelled, linked with the views of its orientation."""
        self._require_pair()
        if name not in LAYOUTS:
            raise ValueError(f"unknown layout {name!r}")
        layout_id = LAYOUT_ID_BASE + list(LAYOUTS).index(name)
        layout_node = self._layout_node()
        if not layout_node.IsLayoutDescription(layout_id):
            layout_node.AddLayoutDescription(layout_id, layout_xml(LAYOUTS[name]))
        layout_node.SetViewArrangement(layout_id)  # Slicer's layout manager makes its views
        self.layout = name
        if not all(self._find(view, "vtkMRMLSliceNode") for view, _, _ in self._views()):
            self._make_views()
        for view, orientation, _ in self._views():
            self.slice_node(view).SetOrientation(orientation)
            composite = self.composite_node(view)
            composite.SetForegroundVolumeID(None)
            composite.SetLinkedControl(True)
            composite.SetHotLinkedControl(True)
        self._fill_views()

    def _views(self) -> list[tuple[str, str, str]]:
        return [view for row in LAYOUTS[self.layout] for view in row]

    def _fill_views(self) -> None:
        """Each view's volume and label: the original's views show the denoised volume while
        flickered, the denoised volume's show its difference while that is on."""
        original, denoised = self._require_pair()
        shown = {ORIGINAL: denoised if self._flickered else original,
                 RESULT: denoised if self._difference is None else self._difference}
        for view, _, role in self._views():
            node = shown[role]
            self.composite_node(view).SetBackgroundVolumeID(node.GetID())
            self._set_label(view, self._label(node))

    def _set_label(self, view: str, label: str) -> None:
        """The view's label (in its bar); the one it had first is kept to put back."""
        node = self.slice_node(view)
        self._own_labels.setdefault(view, node.GetLayoutLabel())
        node.SetLayoutLabel(label)

    def module_entered(self) -> None:
        """The module is shown: the user's layout, each slice view's orientation (its
        slice-to-RAS matrix) and links are kept to put back on exit; a pair shown before is
        shown again in the module's layout."""
        layout = self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        views = {}
        for k in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            node = self.scene.GetNthNodeByClass(k, "vtkMRMLSliceNode")
            matrix = vtk.vtkMatrix4x4()
            matrix.DeepCopy(node.GetSliceToRAS())
            composite = self._find(node.GetLayoutName(), "vtkMRMLSliceCompositeNode")
            links = ((composite.GetLinkedControl(), composite.GetHotLinkedControl())
                     if composite is not None else None)
            views[node.GetLayoutName()] = (node.GetOrientation(), matrix, links)
        self._user_views = (layout.GetViewArrangement() if layout is not None else None, views)
        if self.pair is not None:
            self.set_layout(self.layout)

    def module_left(self) -> None:
        """Another module is shown: layout, orientations, links and labels as the user had
        them when the module was entered."""
        self.restore_view_labels()
        if self._user_views is None:
            return
        (arrangement, views), self._user_views = self._user_views, None
        for view, (orientation, matrix, links) in views.items():
            node = self._find(view, "vtkMRMLSliceNode")
            if node is None:
                continue
            node.SetOrientation(orientation)
            node.GetSliceToRAS().DeepCopy(matrix)
            node.UpdateMatrices()
            composite = self._find(view, "vtkMRMLSliceCompositeNode")
            if composite is not None and links is not None:
                composite.SetLinkedControl(links[0])
                composite.SetHotLinkedControl(links[1])
        layout = self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        if layout is not None and arrangement is not None:
            layout.SetViewArrangement(arrangement)

    def restore_view_labels(self) -> None:
        """The module is left (or the scene closed): the views' labels are Slicer's own."""
        for view, label in self._own_labels.items():
            node = self._find(view, "vtkMRMLSliceNode")
            if node is not None:
                node.SetLayoutLabel(label)

    def _label(self, node) -> str:
        """What a view says it shows: ``original``, ``<model> s=<strength>``, ``difference``,
        or a study image's blinded name (A, B)."""
        model = node.GetAttribute(MODEL_ATTRIBUTE)
        if model:
            return view_label(model, float(node.GetAttribute(STRENGTH_ATTRIBUTE)))
        if self._difference is not None and node.GetID() == self._difference.GetID():
            return "difference"
        return node.GetName() if node.GetAttribute(STUDY_ATTRIBUTE) else ORIGINAL

    def apply_window(self, preset: str | tuple[float, float]) -> None:
        """A preset (Liver W400/L40, Abdomen W350/L40), the original volume's own window, or
        an explicit (width, level)."""
        original, denoised = self._require_pair()
        if isinstance(preset, tuple):
            width, level = preset
        elif preset == VOLUME_PRESET:
            width, level = self.own_windows[original.GetID()]
        elif preset in WINDOW_PRESETS:
            width, level = WINDOW_PRESETS[preset]
        else:
            raise ValueError(f"unknown window preset {preset!r}")
        for node in (original, denoised):
            self._set_window(node.GetDisplayNode(), width, level)

    @property
    def difference_shown(self) -> bool:
        """The result's views show its difference: "Show difference" follows (a new result
        is shown without it)."""
        return self._difference is not None

    def show_difference(self, on: bool) -> Optional[object]:
        """The denoised volume's views: its difference volume (made once) instead, or back."""
        original, denoised = self._require_pair()
        shown, self._difference = self._difference, None
        if on:
            self._difference = (denoised.GetNodeReference(DIFFERENCE_REFERENCE)
                                or self.difference(original, denoised))
        self._fill_views()
        if not on and shown is not None:  # hidden: its voxels are freed
            self._remove_volume(shown)
        return self._difference

    def flicker(self) -> str:
        """Swap what the original's views show (original <-> denoised); returns what they
        show now."""
        self._require_pair()
        self._flickered = not self._flickered
        self._fill_views()
        return "denoised" if self._flickered else "original"

    def _find(self, view: str, kind: str):
        """The node of class ``kind`` that belongs to the view named ``view``, or None."""
        for k in range(self.scene.GetNumberOfNodesByClass(kind)):
            node = self.scene.GetNthNodeByClass(k, kind)
            if node.GetLayoutName() == view:
                return node
        return None

    def slice_node(self, view: str):
        node = self._find(view, "vtkMRMLSliceNode")
        if node is None:
            raise RuntimeError(f"no slice view {view!r} in the scene")
        return node

    def composite_node(self, view: str):
        """The slice composite node of a view (what it shows, and its linking)."""
        node = self._find(view, "vtkMRMLSliceCompositeNode")
        if node is not None:
            return node
        logic = slicer.vtkMRMLSliceLogic()  # as a slice widget does when it is created
        logic.SetMRMLScene(self.scene)
        logic.SetSliceNode(self.slice_node(view))
        return logic.GetSliceCompositeNode()

    def cleanup(self) -> None:
        """The module is closed: stop keeping windows in sync and following the scene."""
        self.removeObservers()
        self._synced = ()

    def _scene_closed(self, caller=None, event=None) -> None:
        """Drop every node and voxel reference (a CT and its result are hundreds of MB)."""
        self._drop_pair()
        self.own_windows = {}
        self.on_scene_closed()

    def _drop_pair(self) -> None:
        self._unsync()
        self.restore_view_labels()
        self.pair, self._full, self._difference = None, None, None

    def _node_removed(self, caller, event, node) -> None:
        """A node is being deleted (Data module, a script): no reference to it stays here or
        in the panel; the pair it belonged to is no longer shown as one."""
        if node is None or self.scene.IsClosing():  # a closing scene: _scene_closed does all
            return
        if self.pair is not None and node in self.pair:
            self._drop_pair()
        elif self._difference is not None and node is self._difference:
            self._difference = None
            if self.pair is not None:
                self._fill_views()
        if self._full is not None and node is self._full[0]:
            self._full = None
        self.own_windows.pop(node.GetID(), None)
        self.on_node_removed(node)

    def _scene_loaded(self, caller=None, event=None) -> None:
        self.on_scene_loaded()

    def _unsync(self) -> None:
        self.removeObservers(self._window_changed)
        self._synced = ()

    # -- parameter node ---------------------------------------------------------------
    def parameter_node(self):
        """The module's parameter node, saved with the scene: a singleton
        vtkMRMLScriptedModuleNode (a loaded scene's replaces its content), made if missing."""
        node = self.scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(MODULE_NAME)
            node.SetModuleName(MODULE_NAME)
            node.SetName(MODULE_NAME)
            node = self.scene.AddNode(node)
        return node

    def save_state(self, state: PanelState) -> None:
        """``state`` into the parameter node, as Slicer's parameterNodeWrapper stores it
        (node fields as node references, so their IDs follow the scene on load)."""
        node = self.parameter_node()
        modifying = node.StartModify()
        for name, value in state.to_strings().items():
            if name in NODE_ROLES:
                node.SetParameter(name, "")
                node.SetNodeReferenceID(name, value or None)
            else:
                node.SetParameter(name, value)
        node.EndModify(modifying)

    def load_state(self) -> PanelState:
        """The state the parameter node holds (defaults for what it lacks)."""
        node = self.parameter_node()
        values = {name: node.GetParameter(name) for name in node.GetParameterNames()}
        values.update({role: node.GetNodeReferenceID(role) or "" for role in NODE_ROLES})
        return PanelState.from_strings(values)

    def node_ids(self, input_node) -> dict[str, str]:
        """The IDs of ``input_node`` and of the volumes shown, by PanelState field."""
        original, result = self.pair if self._shows_result() else (None, None)
        nodes = {"input": input_node, "original": original, "result": result,
                 "difference": self._difference if result is not None else None}
        return {role: node.GetID() if node is not None else "" for role, node in nodes.items()}

    def restore(self, state: PanelState):
        """A loaded scene's pair shown again as the panel showed it (window, layout,
        difference); returns the input node of ``state`` (None when the scene lacks it)."""
        def node(node_id: str):
            return self.scene.GetNodeByID(node_id) if node_id else None

        original, result = node(state.original), node(state.result)
        if original is not None and result is not None:
            self.show_side_by_side(original, result, state.window, state.layout)
            self.show_difference(node(state.difference) is not None)
        return node(state.input)

    def _shows_result(self) -> bool:
        return self.pair is not None and bool(self.pair[1].GetAttribute(MODEL_ATTRIBUTE))

    # -- helpers ------------------------------------------------------------------------
    def _read(self, path: str | Path):
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        self.scene.AddNode(storage)
        storage.SetFileName(str(path))
        read = storage.ReadData(node)
        self.scene.RemoveNode(storage)  # the volume lives in the scene, not in a temp file
        if not read:
            self.scene.RemoveNode(node)
            raise RuntimeError(f"Could not read the volume {path}.")
        return node

    def _remove_volume(self, node) -> None:
        """``node`` and its display nodes out of the scene: a display node left behind keeps
        the volume's voxels alive through its pipeline (measured: 100 MB stay resident)."""
        displays = [node.GetNthDisplayNode(k) for k in range(node.GetNumberOfDisplayNodes())]
        self.scene.RemoveNode(node)
        for display in displays:
            if display is not None:
                self.scene.RemoveNode(display)

    def _rename(self, node, name: str) -> None:
        """``name``, or ``name_1``, ``name_2``... when another node has it."""
        taken = self.scene.GetNodesByName(name)
        if any(taken.GetItemAsObject(k).GetID() != node.GetID()
               for k in range(taken.GetNumberOfItems())):
            name = self.scene.GenerateUniqueName(name)
        node.SetName(name)

    def _layout_node(self):
        layout = self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        if layout is None or self.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode") == 0:
            slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene)
            layout = self._make_views()
        return layout

    def _make_views(self):
        """What Slicer's layout manager does as the layout changes, for a scene without
        Slicer's GUI (tests): a layout node, and a view node for each view of its layout."""
        layout_logic = slicer.vtkMRMLLayoutLogic()
        layout_logic.SetMRMLScene(self.scene)
        layout = layout_logic.GetLayoutNode()
        layout_logic.SetMRMLScene(None)  # a logic left observing the scene crashes Clear()
        return layout

    def _remember_own_window(self, node) -> None:
        display = node.GetDisplayNode()
        if node.GetID() not in self.own_windows:
            self.own_windows[node.GetID()] = (display.GetWindow(), display.GetLevel())

    def _sync_windows(self, first, second) -> None:
        self._unsync()
        self._synced = (first, second)
        for display in self._synced:
            self.addObserver(display, vtk.vtkCommand.ModifiedEvent, self._window_changed)

    def _on_window_changed(self, source, event=None) -> None:
        """One display node's window changed (a drag in its view): the other follows."""
        if self._syncing:
            return
        target = self._synced[1] if source is self._synced[0] else self._synced[0]
        if (source.GetWindow(), source.GetLevel()) != (target.GetWindow(), target.GetLevel()):
            self._syncing = True
            try:
                self._set_window(target, source.GetWindow(), source.GetLevel())
            finally:
                self._syncing = False

    def _require_pair(self):
        if self.pair is None:
            raise RuntimeError("Denoise a volume first: there is no original/denoised pair.")
        return self.pair

    @staticmethod
    def _set_window(display, width: float, level: float) -> None:
        display.AutoWindowLevelOff()
        display.SetWindowLevel(width, level)
