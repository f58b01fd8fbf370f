"""A seeded generator of a small synthetic dataset in the DeLiVER layout.

It lets the whole job (train, test, missing-modality protocol, balance metric) run on real files
without a download: scenes of simple shapes on a ground plane, rendered in the four DeLiVER
modalities, where the modalities are *complementary by construction*. Each of four class pairs is
told apart by exactly one modality; everything else about the two classes of a pair (shape, size,
position, draw order and the other three modalities) is drawn from the same distribution, so a
model that loses that modality loses that pair.

============================  ==========  =================================================
class pair                    modality    cue
============================  ==========  =================================================
Road / SideWalk               rgb         colour (grey asphalt vs sandy paving)
Building / Wall               depth       distance band (40-80 m vs 6-15 m)
Fence / Vegetation            lidar       reflectance and second-echo return pattern
Pedestrian / Pole             event       pedestrians move (edge and texture events)
============================  ==========  =================================================

Sky is the ninth class. The other modalities of a pair are rendered from the pair's *group*
(structure, ground, barrier, thin object), never from the class. The scenes are deliberately not
physical where physics would leak a cue: an object's depth does not follow from where it stands
in the image, objects are drawn in random order (not far to near), fog is uniform (not
depth-dependent) and the synthetic lidar encodes reflectance and echoes but not range, so that
depth stays the only range cue.

Conditions: sun (clean), night (RGB darkened strongly plus noise, more event noise), fog (RGB
washed towards grey, lidar drop-outs and spurious returns), cloud (RGB dimmer and less saturated)
and rain (RGB dimmer with streaks, some lidar noise). Sensor-failure cases are baked into val/test
sequences whose folder name ends with the case name (``seq03_motionblur``), using
:func:`~equiseg_mm.datasets.transforms.simulate_sensor_failure.corrupt_modality`; event frames of
the ``eventlowres`` case are written smaller than the RGB frame, as in DeLiVER.

A second scene preset, ``scene='street'``, has another modality structure, closer to DeLiVER's:
RGB tells *every* class pair apart by day (each class has its own colour), so RGB alone reaches
most of the full-modality mIoU on clear frames; depth (Building / Wall), lidar (Fence /
Vegetation) and events (Pedestrian / Pole) repeat one pair's cue each, and they keep it at night
(RGB nearly black), in thick fog (RGB washed out) and in the RGB motion-blur failure case, where RGB loses it.
Road / SideWalk is told apart by RGB only. Half the frames are at night or in fog (conditions
sun, night, sun, fog). The other modalities and every geometric draw are those of the
complementary scene.

============================  ====================  =======================================
class pair                    modalities            cue
============================  ====================  =======================================
Road / SideWalk               rgb                   colour
Building / Wall               rgb, depth            colour; distance band
Fence / Vegetation            rgb, lidar            colour; reflectance and second echo
Pedestrian / Pole             rgb, event            colour; motion
============================  ====================  =======================================
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from equiseg_mm.datasets import DELIVERDataset
from equiseg_mm.datasets.transforms.simulate_sensor_failure import FAILURE_CASES, corrupt_modality
from equiseg_mm.utils import check_names

#: DeLiVER's 25 classes and palette, in label order (from :class:`DELIVERDataset`).
DELIVER_CLASSES = tuple(DELIVERDataset.METAINFO['classes'])
DELIVER_PALETTE = tuple(tuple(c) for c in DELIVERDataset.METAINFO['palette'])
CONDITIONS = DELIVERDataset.CONDITIONS
SPLITS = DELIVERDataset.SPLITS

_ID = {name: i for i, name in enumerate(DELIVER_CLASSES)}
BUILDING, FENCE, PEDESTRIAN, POLE = _ID['Building'], _ID['Fence'], _ID['Pedestrian'], _ID['Pole']
ROAD, SIDEWALK, VEGETATION, WALL, SKY = (_ID['Road'], _ID['SideWalk'], _ID['Vegetation'],
                                         _ID['Wall'], _ID['Sky'])
#: The DeLiVER class ids the synthetic data uses, in label order.
SYNTHETIC_CLASS_IDS = tuple(sorted((BUILDING, FENCE, PEDESTRIAN, POLE, ROAD, SIDEWALK,
                                    VEGETATION, WALL, SKY)))
#: (class A, class B, the only modality that tells them apart, the cue).
COMPLEMENTARY_PAIRS = (
    ('Road', 'SideWalk', 'rgb', 'colour: grey asphalt vs sandy paving'),
    ('Building', 'Wall', 'depth', 'distance: 40-80 m vs 6-15 m'),
    ('Fence', 'Vegetation', 'lidar', 'reflectance (high vs low) and second echo (none vs strong)'),
    ('Pedestrian', 'Pole', 'event', 'motion: pedestrians move and fire events, poles are static'),
)

_MODALITY_DIRS = dict(rgb='img', depth='hha', event='event', lidar='lidar')
_MODALITY_TOKENS = dict(rgb='rgb', depth='depth', event='event', lidar='lidar')
_MAX_ID = len(DELIVER_CLASSES)

# Appearance lookup tables indexed by DeLiVER class id. Both classes of a pair share every entry
# except those of the pair's own modality.
_GROUP_RGB = np.zeros((_MAX_ID, 3), np.float32)
_GROUP_RGB[ROAD] = (80, 80, 90)
_GROUP_RGB[SIDEWALK] = (175, 150, 110)            # colour pair: the only RGB difference
_GROUP_RGB[[BUILDING, WALL]] = (125, 115, 165)
_GROUP_RGB[[FENCE, VEGETATION]] = (60, 120, 55)
_GROUP_RGB[[PEDESTRIAN, POLE]] = (225, 175, 45)
# The street scene: every class its own colour (RGB separates all four pairs by day).
_STREET_RGB = _GROUP_RGB.copy()
_STREET_RGB[WALL] = (165, 120, 105)
_STREET_RGB[FENCE] = (105, 115, 140)
_STREET_RGB[PEDESTRIAN] = (200, 70, 75)
_LIDAR_INTENSITY = np.zeros(_MAX_ID, np.float32)
_LIDAR_INTENSITY[[ROAD, SIDEWALK]] = 90
_LIDAR_INTENSITY[[BUILDING, WALL]] = 150
_LIDAR_INTENSITY[FENCE], _LIDAR_INTENSITY[VEGETATION] = 215, 75   # lidar pair
_LIDAR_INTENSITY[[PEDESTRIAN, POLE]] = 120
_LIDAR_ECHO = np.zeros(_MAX_ID, np.float32)
_LIDAR_ECHO[VEGETATION] = 160                                     # lidar pair
_LIDAR_ECHO[[PEDESTRIAN, POLE]] = 40
_DEPTH_BAND = {BUILDING: (40.0, 80.0), WALL: (6.0, 15.0),          # depth pair
               FENCE: (8.0, 25.0), VEGETATION: (8.0, 25.0),
               PEDESTRIAN: (5.0, 25.0), POLE: (5.0, 25.0)}
# Object groups: (classes of the pair, count range, width and height as fractions of the image,
# bottom edge range as fractions of the image height below the horizon).
_GROUPS = (
    ((BUILDING, WALL), (2, 5), (0.15, 0.35), (0.25, 0.55), (0.02, 0.25)),
    ((FENCE, VEGETATION), (1, 4), (0.20, 0.45), (0.10, 0.20), (0.10, 0.60)),
    ((PEDESTRIAN, POLE), (2, 6), (0.035, 0.07), (0.18, 0.38), (0.10, 0.60)),
)
_MOVING = (PEDESTRIAN, )
#: (class A, class B, the modalities that tell them apart, the cues) of the street scene.
STREET_PAIRS = (
    ('Road', 'SideWalk', 'rgb', 'colour: grey asphalt vs sandy paving'),
    ('Building', 'Wall', 'rgb+depth', 'colour; distance: 40-80 m vs 6-15 m'),
    ('Fence', 'Vegetation', 'rgb+lidar', 'colour; reflectance and second echo'),
    ('Pedestrian', 'Pole', 'rgb+event', 'colour; motion (pedestrians fire events)'),
)
#: Scene presets: the RGB colour table, the default conditions, the night gain range, the fog's
#: blend range towards grey and its sensor noise (std), the class pairs with the modalities that separate them, and
#: the folder the configs and tools read the scene from.
SCENES = dict(
    complementary=dict(data_root='data/synthetic_deliver', rgb=_GROUP_RGB,
                       conditions=('sun', 'night', 'fog'), night_gain=(0.12, 0.2),
                       fog_alpha=(0.55, 0.7), fog_noise=0.0, pairs=COMPLEMENTARY_PAIRS),
    street=dict(data_root='data/synthetic_street', rgb=_STREET_RGB,
                conditions=('sun', 'night', 'sun', 'fog'), night_gain=(0.03, 0.06),
                fog_alpha=(0.9, 0.95), fog_noise=6.0, pairs=STREET_PAIRS),
)
_CAMERA_HEIGHT = 1.6      # metres, for the ground plane's depth
_DISPARITY_NEAR = 3.0     # metres: disparity channel = 255 * min(1, 3 / depth)
_HEIGHT_SCALE = 30.0      # metres: height channel = 255 * min(1, height / 30)


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift a 2-D mask by (dy, dx) pixels, filling with False."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    src_r = slice(max(0, -dy), min(h, h - dy))
    src_c = slice(max(0, -dx), min(w, w - dx))
    dst_r = slice(max(0, dy), min(h, h + dy))
    dst_c = slice(max(0, dx), min(w, w + dx))
    out[dst_r, dst_c] = mask[src_r, src_c]
    return out


def _render_scene(rng: np.random.Generator, h: int, w: int,
                  rgb_table: np.ndarray = _GROUP_RGB) -> Dict[str, np.ndarray]:
    """Render one clean scene: label ids and float rgb (RGB order), depth, event, lidar."""
    rows = np.arange(h, dtype=np.float32)[:, None]
    cols = np.arange(w, dtype=np.float32)[None, :]
    focal = float(w)
    horizon = int(round(h * rng.uniform(0.35, 0.45)))

    label = np.full((h, w), SKY, np.uint8)
    obj = np.full((h, w), -1, np.int32)
    gain = np.ones((h, w), np.float32)
    depth = np.full((h, w), np.inf, np.float32)
    height = np.zeros((h, w), np.float32)
    angle = np.zeros((h, w), np.float32)

    # Ground: wedges from a vanishing point on the horizon, alternately Road and SideWalk.
    ground = np.broadcast_to(rows >= horizon, (h, w))
    vx = w * rng.uniform(0.3, 0.7)
    theta = np.arctan2(rows - horizon + 0.5, cols - vx + 0.5)
    num_wedges = int(rng.integers(3, 6))
    breaks = np.sort(rng.uniform(0.12 * np.pi, 0.88 * np.pi, num_wedges - 1))
    wedge = np.searchsorted(breaks, theta)
    start = int(rng.integers(2))
    wedge_gain = rng.uniform(0.9, 1.1, num_wedges).astype(np.float32)
    label[ground] = np.where((wedge + start) % 2 == 0, ROAD, SIDEWALK)[ground]
    gain[ground] = wedge_gain[wedge][ground]
    depth[ground] = np.broadcast_to(_CAMERA_HEIGHT * focal / (rows - horizon + 0.5),
                                    (h, w))[ground]
    angle[ground] = 30.0

    # Objects: every random draw is made whatever the class, so geometry is class-independent.
    objects = []
    for classes, count, width_rng, height_rng, bottom_rng in _GROUPS:
        for _ in range(int(rng.integers(*count))):
            cls = classes[int(rng.integers(2))]
            ow = max(2, int(round(rng.uniform(*width_rng) * w)))
            oh = max(2, int(round(rng.uniform(*height_rng) * h)))
            x0 = int(round(rng.uniform(-0.1, 1.0) * w))
            bottom = horizon + 1 + int(round(rng.uniform(*bottom_rng) * h))
            lo, hi = _DEPTH_BAND[cls]
            objects.append(dict(cls=cls, x0=x0, x1=x0 + ow, top=bottom - oh,
                                bottom=min(bottom, h), foot=bottom,
                                depth=lo + (hi - lo) * rng.uniform(),
                                gain=rng.uniform(0.9, 1.1),
                                motion=(int(rng.integers(-1, 2)),
                                        int(rng.choice([-1, 1]) * rng.integers(2, 5)))))
    order = rng.permutation(len(objects))     # random draw order: occlusion tells nothing
    for idx in order:
        o = objects[idx]
        r0, r1 = max(0, o['top']), o['bottom']
        c0, c1 = max(0, o['x0']), min(w, o['x1'])
        if r1 <= r0 or c1 <= c0:
            continue
        sl = (slice(r0, r1), slice(c0, c1))
        label[sl] = o['cls']
        obj[sl] = idx
        gain[sl] = o['gain']
        depth[sl] = o['depth']
        height[sl] = (o['foot'] - rows[r0:r1]) * o['depth'] / focal
        angle[sl] = 150.0

    # RGB (RGB order): group colour x region gain + texture; sky is a vertical gradient.
    rgb = rgb_table[label] * gain[..., None]
    sky_t = np.clip(rows / max(horizon, 1), 0, 1)[..., None]
    sky = (1 - sky_t) * np.array([110, 160, 220], np.float32) + \
        sky_t * np.array([185, 210, 235], np.float32)
    rgb = np.where((label == SKY)[..., None], np.broadcast_to(sky, (h, w, 3)), rgb)
    rgb = rgb + rng.normal(0, 5, (h, w, 1)) + rng.normal(0, 2, (h, w, 3))

    # Depth, HHA-like: disparity, height above ground, angle to gravity (0 where no depth).
    finite = np.isfinite(depth)
    disparity = np.where(finite, 255.0 * np.minimum(1.0, _DISPARITY_NEAR / depth), 0.0)
    depth_img = np.stack([disparity, 255.0 * np.minimum(1.0, height / _HEIGHT_SCALE), angle],
                         axis=-1)
    depth_img = depth_img + finite[..., None] * rng.normal(0, 1.0, (h, w, 3))

    # Lidar: returns on every other row (a scan pattern) with 10 % drop-outs, none on sky.
    # Channels: reflectance, second-echo strength, return flag.
    parity = int(rng.integers(2))
    valid = (label != SKY) & ((np.arange(h)[:, None] % 2) == parity) & (rng.random((h, w)) > 0.1)
    intensity = _LIDAR_INTENSITY[label] + rng.normal(0, 12, (h, w))
    echo = _LIDAR_ECHO[label] + rng.normal(0, 12, (h, w))
    lidar = np.stack([intensity, echo, np.full((h, w), 255.0)], axis=-1) * valid[..., None]

    # Events (B, G, R array order): positive polarity in R, negative in B; moving objects fire
    # on their leading/trailing edges and on 30 % of their texture.
    event = np.zeros((h, w, 3), np.float32)
    for idx, o in enumerate(objects):
        if o['cls'] not in _MOVING:
            continue
        mask = obj == idx
        if not mask.any():
            continue
        dy, dx = o['motion']
        prev = _shift(mask, -dy, -dx)
        texture = mask & (rng.random((h, w)) < 0.3)
        polarity = rng.random((h, w)) < 0.5
        event[..., 2][(mask & ~prev) | (texture & polarity)] = 255
        event[..., 0][(prev & ~mask) | (texture & ~polarity)] = 255
    return dict(label=label, rgb=rgb, depth=depth_img, event=event, lidar=lidar)


def _apply_condition(scene: Dict[str, np.ndarray], condition: str, rng: np.random.Generator,
                     night_gain: Tuple[float, float] = (0.12, 0.2),
                     fog_alpha: Tuple[float, float] = (0.55, 0.7),
                     fog_noise: float = 0.0) -> None:
    """Apply a weather/lighting condition in place; all draws are class-independent."""
    h, w = scene['label'].shape
    rgb, lidar, event = scene['rgb'], scene['lidar'], scene['event']
    noise_density = 0.004
    if condition == 'night':
        rgb *= rng.uniform(*night_gain)
        rgb += rng.normal(0, 3, rgb.shape)
        noise_density = 0.012
    elif condition == 'fog':
        alpha = rng.uniform(*fog_alpha)
        rgb *= 1 - alpha
        rgb += alpha * 190.0
        if fog_noise > 0:  # no draw otherwise: the complementary scene's files stay as they are
            rgb += rng.normal(0, fog_noise, rgb.shape)
        lidar *= (rng.random((h, w)) > 0.25)[..., None]
        spurious = rng.random((h, w)) < 0.05
        lidar[spurious] = np.stack([rng.uniform(30, 200, (h, w)), rng.uniform(0, 180, (h, w)),
                                    np.full((h, w), 255.0)], axis=-1)[spurious]
    elif condition == 'cloud':
        grey = rgb.mean(axis=-1, keepdims=True)
        rgb[:] = 0.8 * (0.7 * rgb + 0.3 * grey)
    elif condition == 'rain':
        rgb *= 0.8
        for _ in range(int(rng.integers(15, 30))):
            r, c = int(rng.integers(h)), int(rng.integers(w))
            length = int(rng.integers(4, 10))
            rgb[r:r + length, c] += 40
        lidar *= (rng.random((h, w)) > 0.15)[..., None]
        spurious = rng.random((h, w)) < 0.02
        lidar[spurious] = np.stack([rng.uniform(30, 200, (h, w)), rng.uniform(0, 180, (h, w)),
                                    np.full((h, w), 255.0)], axis=-1)[spurious]
    elif condition != 'sun':
        raise ValueError(f'unknown condition {condition!r}; allowed values are {list(CONDITIONS)}')
    fire = rng.random((h, w)) < noise_density
    positive = rng.random((h, w)) < 0.5
    event[..., 2][fire & positive] = 255
    event[..., 0][fire & ~positive] = 255


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _plan_split(split: str, num: int, conditions: Sequence[str], cases: Sequence[str],
                frames_per_sequence: int) -> List[Tuple[str, str, str]]:
    """(condition, case, sequence) per sample. val/test: the first sequences are failure cases."""
    plan = []
    if split != 'train' and cases:
        # shorter sequences when needed, so that every case (and a clean one) fits if it can
        frames_per_sequence = max(1, min(frames_per_sequence, num // (len(cases) + 1)))
    num_seq = -(-num // frames_per_sequence)
    for j in range(num_seq):
        condition = conditions[j % len(conditions)]
        case = cases[j] if split != 'train' and j < len(cases) else 'clean'
        sequence = f'seq{j:02d}' + ('' if case == 'clean' else f'_{case}')
        frames = min(frames_per_sequence, num - j * frames_per_sequence)
        plan.extend([(condition, case, sequence)] * frames)
    return plan


def _meta(seed: int, size: Tuple[int, int], counts: Dict[str, int], conditions: Sequence[str],
          cases: Sequence[str], failure_severity: int, frames_per_sequence: int,
          scene: str = 'complementary') -> dict:
    meta = dict(
        # the name recorded in every synthetic_meta.json (existing datasets keep matching)
        generator='equiseg_mm.datasets.make_synthetic_deliver',
        format_version=1,
        seed=seed,
        size=list(size),
        num_samples=counts,
        conditions=list(conditions),
        cases=list(cases),
        failure_severity=failure_severity,
        frames_per_sequence=frames_per_sequence,
        layout='{img,hha,event,lidar,semantic}/<condition>/<split>/<sequence>/'
               '<frame>_{rgb,depth,event,lidar,semantic}_front.png',
        label_encoding='R channel of a 3-channel PNG holds DeLiVER class id + 1 (raw 0 = ignore); '
                       'G and B are 0',
        channels=dict(
            rgb='colour camera',
            depth='HHA-like, in cv2 (B, G, R) order: disparity 255*min(1, 3 m/depth), height '
                  'above ground 255*min(1, h/30 m), angle to gravity (ground 30, upright 150); '
                  '0 where there is no depth (sky)',
            event='positive events in R, negative in B (255 where an event fired)',
            lidar='in cv2 (B, G, R) order: reflectance, second-echo strength, return flag 255; '
                  'returns on every other row; no range (depth is the range cue)'),
        classes=[dict(name=DELIVER_CLASSES[i], deliver_id=i, raw_label=i + 1,
                      palette=list(DELIVER_PALETTE[i])) for i in SYNTHETIC_CLASS_IDS],
        pairs=[dict(classes=[a, b], separated_by=m, cue=cue) for a, b, m, cue in
               SCENES[scene]['pairs']],
    )
    if scene != 'complementary':  # the complementary scene's meta file is as it always was
        meta['scene'] = scene
    return meta


_META_FILE = 'synthetic_meta.json'
_PARTIAL = '.partial-'  # hidden sibling folders: '.<root name>.partial-<pid>-<random>'


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_names(values: Sequence[str], allowed: Sequence[str], what: str) -> Tuple[str, ...]:
    if isinstance(values, str):
        raise ValueError(f'{what} must be a sequence of names, not the string {values!r}; '
                         f'e.g. ({values!r}, )')
    check_names(values, allowed, what[:-1])
    return tuple(values)


def _check_arguments(root, counts: Dict[str, int], size, seed, conditions, cases,
                     failure_severity, frames_per_sequence, overwrite) -> tuple:
    """Validate every argument (before anything is written); return the normalised ones."""
    if not isinstance(root, (str, os.PathLike)):
        raise ValueError(f'root must be a folder path, got {root!r}')
    for key, value in counts.items():
        if not _is_int(value) or value < 0:
            raise ValueError(f'num_{key} must be an int >= 0, got {value!r}')
    if (isinstance(size, str) or not hasattr(size, '__len__') or len(size) != 2
            or not all(_is_int(s) and s >= 16 for s in size)):
        raise ValueError(f'size must be (H, W), two ints >= 16, got {size!r}')
    if not _is_int(seed) or seed < 0:
        raise ValueError(f'seed must be an int >= 0, got {seed!r}')
    conditions = _check_names(conditions, CONDITIONS, 'conditions')
    if not conditions:
        raise ValueError(f'conditions must not be empty; allowed values are {list(CONDITIONS)}')
    cases = _check_names(cases, DELIVERDataset.CASES, 'cases')
    if not _is_int(failure_severity) or not 1 <= failure_severity <= 5:
        raise ValueError(f'failure_severity must be an int in 1..5, got {failure_severity!r}')
    if not _is_int(frames_per_sequence) or frames_per_sequence < 1:
        raise ValueError(f'frames_per_sequence must be an int >= 1, got {frames_per_sequence!r}')
    if not isinstance(overwrite, bool):
        raise ValueError(f'overwrite must be True or False, got {overwrite!r}')
    return ({k: int(v) for k, v in counts.items()}, (int(size[0]), int(size[1])), int(seed),
            conditions, cases, int(failure_severity), int(frames_per_sequence))


def _samples(plans: Dict[str, List[Tuple[str, str, str]]]) -> Iterator[tuple]:
    """(split index, index in split, frame number, condition, case, sequence) of every sample."""
    frame = 0
    for split_idx, split in enumerate(SPLITS):
        for idx, (condition, case, sequence) in enumerate(plans[split]):
            yield split_idx, idx, frame, condition, case, sequence
            frame += 1


def _sample_files(root: str, split: str, frame: int, condition: str,
                  sequence: str) -> Dict[str, str]:
    """Modality name (and 'semantic') -> file of one sample."""
    folders = dict(_MODALITY_DIRS, semantic='semantic')
    tokens = dict(_MODALITY_TOKENS, semantic='semantic')
    return {key: osp.join(root, folder, condition, split, sequence,
                          f'{frame:06d}_{tokens[key]}_front.png')
            for key, folder in folders.items()}


def _read_meta(root: str) -> Optional[dict]:
    try:
        with open(osp.join(root, _META_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_complete(root: str, meta: dict, plans: dict) -> bool:
    """``root`` holds this very dataset: the same meta file and every sample file."""
    if _read_meta(root) != meta:
        return False
    return all(osp.isfile(path)
               for split_idx, _, frame, condition, _, sequence in _samples(plans)
               for path in _sample_files(root, SPLITS[split_idx], frame, condition,
                                         sequence).values())


def _check_root(root: str, meta: dict, overwrite: bool) -> None:
    """Refuse a ``root`` that holds something else, unless ``overwrite``."""
    if osp.exists(root) and not osp.isdir(root):
        raise FileExistsError(f'{root} is a file; give a folder for the dataset')
    if overwrite or not osp.isdir(root) or not os.listdir(root):
        return
    existing = _read_meta(root)
    if existing == meta:
        return  # this dataset, incomplete: rewriting it gives the same files
    what = ('a synthetic dataset with other settings' if existing is not None else
            'files that are not this synthetic dataset')
    raise FileExistsError(f'{root} is not empty and holds {what}; pass overwrite=True '
                          f'(--overwrite) to replace it, or choose another folder')


def _remove_stale_partials(root: str) -> None:
    """Delete the partial folders of runs that were killed (their process has ended)."""
    parent, prefix = osp.dirname(root), f'.{osp.basename(root)}{_PARTIAL}'
    for entry in os.listdir(parent):
        pid = entry[len(prefix):].split('-')[0] if entry.startswith(prefix) else ''
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(osp.join(parent, entry), ignore_errors=True)
        except (PermissionError, OSError):
            pass  # running (as another user), or unknown: leave it


def _move_into_place(partial: str, root: str) -> None:
    """Put the finished dataset of ``partial`` at ``root``; the meta file arrives last."""
    if not osp.isdir(root) or not os.listdir(root):
        if osp.isdir(root):
            os.rmdir(root)
        os.replace(partial, root)  # a single rename: a reader sees all or nothing
        return
    # ``root`` also holds other files (overwrite, or an incomplete copy of this dataset): swap
    # our folders by renames; the old meta file leaves first, the new one comes last.
    old = tempfile.mkdtemp(prefix=f'.{osp.basename(root)}{_PARTIAL}{os.getpid()}-',
                           dir=osp.dirname(root))
    entries = [_META_FILE] + list(_MODALITY_DIRS.values()) + ['semantic']
    for entry in entries:
        if osp.lexists(osp.join(root, entry)):
            os.replace(osp.join(root, entry), osp.join(old, entry))
    for entry in entries[1:] + entries[:1]:
        if osp.lexists(osp.join(partial, entry)):
            os.replace(osp.join(partial, entry), osp.join(root, entry))
    shutil.rmtree(old)
    os.rmdir(partial)


def _write_dataset(out: str, meta: dict, plans: dict, seed: int, size: Tuple[int, int],
                   failure_severity: int, scene: str = 'complementary') -> None:
    h, w = size
    preset = SCENES[scene]
    for split_idx, idx, frame, condition, case, sequence in _samples(plans):
        rng = np.random.default_rng([seed, split_idx, idx])
        frame_data = _render_scene(rng, h, w, preset['rgb'])
        _apply_condition(frame_data, condition, rng, preset['night_gain'], preset['fog_alpha'],
                         preset['fog_noise'])
        arrays = {m: _to_uint8(frame_data[m]) for m in ('rgb', 'depth', 'event', 'lidar')}
        if case != 'clean':
            target = FAILURE_CASES[case]
            arrays[target] = corrupt_modality(
                arrays[target], case, failure_severity,
                np.random.default_rng([seed, split_idx, idx, 1]),
                keep_size=case != 'eventlowres')
        semantic = np.zeros((h, w, 3), np.uint8)
        semantic[..., 2] = frame_data['label'] + 1        # R channel of the file (cv2 is BGR)
        arrays['rgb'] = np.ascontiguousarray(arrays['rgb'][..., ::-1])  # RGB -> cv2 BGR
        arrays['semantic'] = semantic
        paths = _sample_files(out, SPLITS[split_idx], frame, condition, sequence)
        for key, array in arrays.items():
            _write(paths[key], array)
    with open(osp.join(out, _META_FILE), 'w') as f:
        json.dump(meta, f, indent=2)
        f.write('\n')


def make_synthetic_deliver(root: str,
                           num_train: int = 160,
                           num_val: int = 48,
                           num_test: int = 48,
                           size: Tuple[int, int] = (96, 128),
                           seed: int = 0,
                           conditions: Optional[Sequence[str]] = None,
                           cases: Sequence[str] = DELIVERDataset.CASES,
                           failure_severity: int = 4,
                           frames_per_sequence: int = 4,
                           overwrite: bool = False,
                           scene: str = 'complementary') -> dict:
    """Write a small synthetic dataset in the DeLiVER layout, readable by ``DELIVERDataset``.

    Files: ``root/{img,hha,event,lidar,semantic}/<condition>/<split>/<sequence>/
    <frame>_{rgb,depth,event,lidar,semantic}_front.png`` (all 3-channel 8-bit PNGs; frames are
    numbered over the whole dataset) and ``root/synthetic_meta.json`` (settings, classes, and which
    modality separates which class pair). See the module docstring for the scenes.

    Samples are grouped into sequences of ``frames_per_sequence`` frames; sequence ``j`` of a split
    has condition ``conditions[j % len(conditions)]``. In val and test the first ``len(cases)``
    sequences carry one failure case each (``seq00_motionblur``, ...), with sequences shortened
    if needed so that every case and at least one clean sequence fit; train is clean. Each sample
    draws from its own generator seeded with ``(seed, split, index)``, so the files are
    byte-identical for a seed.

    Every argument is checked before anything is written. When ``root`` already holds this very
    dataset (the same meta file, every file present) the summary is returned at once, without
    rewriting. Otherwise the files are written into a hidden sibling folder
    (``.<root name>.partial-<pid>-<random>``) that is renamed to ``root`` at the end, so an
    interrupted run leaves ``root`` as it was; the partial folder of a killed run is deleted by
    the next run.

    Args:
        root (str): Output folder (the ``DELIVER`` folder of the real layout).
        num_train (int): Training samples. Defaults to 160.
        num_val (int): Validation samples. Defaults to 48.
        num_test (int): Test samples. Defaults to 48.
        size (tuple[int, int]): (H, W) of the frames. Defaults to (96, 128).
        seed (int): Seed of every random draw, >= 0. Defaults to 0.
        conditions (Sequence[str], optional): Conditions to cycle through, of 'cloud', 'fog',
            'night', 'rain', 'sun'. Defaults to the scene's: ('sun', 'night', 'fog') for
            'complementary', ('sun', 'night', 'sun', 'fog') for 'street'.
        cases (Sequence[str]): Failure cases for val/test, of 'motionblur', 'overexposure',
            'underexposure', 'lidarjitter', 'eventlowres'. Defaults to all five.
        failure_severity (int): Severity 1..5 of the baked failures (see
            :func:`corrupt_modality`); 4 makes a failed modality clearly useless for its pair.
            Defaults to 4.
        frames_per_sequence (int): Frames per sequence folder. Defaults to 4.
        overwrite (bool): Replace a non-empty ``root`` holding something else (only the five
            modality folders and the meta file are replaced; other files stay), and rewrite even
            a complete copy of this dataset. Without it, a ``root`` holding an incomplete copy of
            this very dataset is rewritten. Defaults to False.
        scene (str): Scene preset (:data:`SCENES`): 'complementary' (each class pair told apart
            by one modality only) or 'street' (RGB tells every pair apart by day; depth, lidar
            and events repeat one pair's cue each and keep it at night and in fog). See the
            module docstring. Defaults to 'complementary'.

    Returns:
        dict: Summary: ``root``, ``seed``, ``size``, ``num_samples`` per split, ``conditions``
        and ``cases`` (per split: name -> samples), ``classes`` (names in label order),
        ``pairs`` (class A, class B, separating modalities joined by '+'), ``scene`` and
        ``meta_path``.

    Raises:
        ValueError: A bad count, size, seed, condition, case, severity, frames_per_sequence,
            overwrite or scene.
        FileExistsError: ``root`` is not empty, holds something else and ``overwrite`` is False,
            or it is a file.
    """
    if not isinstance(scene, str) or scene not in SCENES:
        raise ValueError(f'unknown scene {scene!r}; allowed values are {list(SCENES)}')
    if conditions is None:
        conditions = SCENES[scene]['conditions']
    counts, size, seed, conditions, cases, failure_severity, frames_per_sequence = \
        _check_arguments(root, dict(train=num_train, val=num_val, test=num_test), size, seed,
                         conditions, cases, failure_severity, frames_per_sequence, overwrite)
    meta = _meta(seed, size, counts, conditions, cases, failure_severity, frames_per_sequence,
                 scene)
    plans = {split: _plan_split(split, counts[split], conditions, cases, frames_per_sequence)
             for split in SPLITS}
    per_condition = {s: {} for s in SPLITS}
    per_case = {s: {} for s in SPLITS}
    for split, plan in plans.items():
        for condition, case, _ in plan:
            per_condition[split][condition] = per_condition[split].get(condition, 0) + 1
            per_case[split][case] = per_case[split].get(case, 0) + 1
    root = osp.abspath(os.fspath(root))
    summary = dict(root=root, seed=seed, size=size, num_samples=counts, conditions=per_condition,
                   cases=per_case, classes=[DELIVER_CLASSES[i] for i in SYNTHETIC_CLASS_IDS],
                   pairs=[(a, b, m) for a, b, m, _ in SCENES[scene]['pairs']], scene=scene,
                   meta_path=osp.join(root, _META_FILE))
    if not overwrite and _is_complete(root, meta, plans):
        return summary
    _check_root(root, meta, overwrite)

    os.makedirs(osp.dirname(root), exist_ok=True)
    _remove_stale_partials(root)
    partial = tempfile.mkdtemp(prefix=f'.{osp.basename(root)}{_PARTIAL}{os.getpid()}-',
                               dir=osp.dirname(root))
    try:
        _write_dataset(partial, meta, plans, seed, size, failure_severity, scene)
        _move_into_place(partial, root)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone already unless something failed
    return summary


def _write(path: str, array: np.ndarray) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, array):
        raise OSError(f'could not write {path}')


__all__ = ['make_synthetic_deliver', 'DELIVER_CLASSES', 'DELIVER_PALETTE',
           'SYNTHETIC_CLASS_IDS', 'COMPLEMENTARY_PAIRS', 'STREET_PAIRS', 'SCENES']
