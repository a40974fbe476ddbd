"""One humanoid map per armature: which bone (and which point of it) is each OpenPose joint.

Plain Python over a list of :class:`Bone` records (rest positions in world
space, Z up), so the pod's render, the laptop's pre-check and the add-on's
*Pose joints* panel compute the same map; ``pod_setup/skeleton.py`` reads the
records from bpy.

The map is built in three passes, each only filling what the one before left
empty:

1. **Names**: the joint tables below, matched on a normalised name (namespace,
   ``DEF-``/``ORG-``/``CC_Base_`` prefixes and separators dropped, the side
   read from ``.L``/``_l``/``Left``/``l``-prefix spellings). Blender's metarig
   and Rigify, Mixamo, Unreal's mannequin, Character Creator, Daz Genesis 8/9,
   Auto-Rig Pro and VRM's humanoid bone names all meet here. In a Rigify rig
   (it has ``DEF-`` bones) a bare name is a control bone and never used: the
   ``eye.L`` control floats in front of the face.
2. **Structure**: for names never seen, the skeleton's shape: the hips where
   two chains run down, the spine up from there, the chest where two chains
   run out sideways, shoulder/elbow/wrist and hip/knee/ankle from the
   proportions of each chain, the hand where five fingers branch. Left and
   right come from the rest pose: the character faces where its feet point
   (else Blender's front, -Y).
3. **Face**: nose, eyes and ears from face bones when the rig has them, else
   from the head bone's own geometry (base, top, the rig's forward); a rig
   with no head bone gets none rather than a guess.

Hands: the 21 OpenPose hand keypoints per hand (wrist; thumb CMC, MCP, IP,
tip; each finger MCP, PIP, DIP, tip) where the rig has finger bones.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .jobspec import COCO18_JOINTS

log = logging.getLogger(__name__)

Vec = tuple[float, float, float]

BODY_JOINTS = COCO18_JOINTS
FACE_JOINTS = ("nose", "right_eye", "left_eye", "right_ear", "left_ear")
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
HAND_KEYPOINTS = 21
# Fewer body joints than this on screen and the OpenPose ControlNet has too little to follow.
MIN_BODY_JOINTS = 12


@dataclass(frozen=True)
class Bone:
    """One bone at rest: world-space head and tail, Z up."""

    name: str
    parent: str | None
    head: Vec
    tail: Vec
    deform: bool = True
    # The bone's rest frame in world space: its local X, Y (head→tail) and Z axes, scale included.
    axes: tuple[Vec, Vec, Vec] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def to_local(self, world_offset: Vec) -> Vec:
        """A world-space offset from the head in the bone's rest frame (the frame posing moves)."""
        x, y, z = (_dot(world_offset, axis) / (_dot(axis, axis) or 1.0) for axis in self.axes)
        return (x, y, z)


@dataclass(frozen=True)
class JointRef:
    """A point of a bone: its head, its tail, or a point in the bone's own rest frame (``offset``,
    metres along the bone's local X, Y (head→tail) and Z) for face joints read from the head's shape."""

    bone: str
    end: str = "head"  # head | tail | offset
    offset: Vec = (0.0, 0.0, 0.0)

    def __str__(self) -> str:
        if self.end == "offset":
            return f"{self.bone}@" + ",".join(f"{v:.4f}" for v in self.offset)
        return f"{self.bone}:{self.end}"

    @classmethod
    def parse(cls, text: str) -> JointRef:
        """``bone``, ``bone:head``, ``bone:tail`` (as a job's ``bone_map`` writes them) or ``bone@x,y,z``."""
        if "@" in text:
            name, _, numbers = text.rpartition("@")
            values = tuple(float(v) for v in numbers.split(","))
            if len(values) == 3 and all(math.isfinite(v) for v in values):
                return cls(name, "offset", (values[0], values[1], values[2]))
        if text.endswith((":head", ":tail")):
            name, end = text.rsplit(":", 1)
            return cls(name, end)
        return cls(text, "head")


@dataclass
class HumanoidMap:
    """Where each joint of one armature is; ``source`` says how each was found (name, structure,
    head, override) and ``convention`` which naming matched."""

    armature: str
    convention: str
    joints: dict[str, JointRef] = field(default_factory=dict)
    hands: dict[str, list[JointRef]] = field(default_factory=dict)  # "left"/"right": 21 refs
    source: dict[str, str] = field(default_factory=dict)

    @property
    def body_count(self) -> int:
        return sum(1 for joint in BODY_JOINTS if joint in self.joints)

    def summary(self) -> str:
        hands = f" (+ {len(self.hands)} hand{'s' if len(self.hands) != 1 else ''})" if self.hands else ""
        return f"{self.body_count} of {len(BODY_JOINTS)} joints{hands}, {self.convention}"

    def to_dict(self) -> dict:
        return {"armature": self.armature, "convention": self.convention,
                "joints": {joint: str(ref) for joint, ref in self.joints.items()},
                "hands": {side: [str(ref) for ref in refs] for side, refs in self.hands.items()},
                "source": dict(self.source)}


def skeleton_problem(report: list[dict]) -> str:
    """One line when the skeletons give the OpenPose ControlNet too little to follow; "" when they do."""
    if not report:
        return "openpose control: no armature deforms a mesh the render shows; nothing to draw"
    best = max(report, key=lambda r: r["on_screen"])
    if best["on_screen"] >= MIN_BODY_JOINTS:
        return ""
    missing = ", ".join(best["missing"][:8]) + (" …" if len(best["missing"]) > 8 else "")
    return (f"openpose control: armature {best['armature']!r} ({best['convention']}) has {best['on_screen']} of "
            f"{len(BODY_JOINTS)} body joints on screen, fewer than {MIN_BODY_JOINTS} (missing: {missing}); "
            "set them in the Pose joints panel or with --bone-map")


# --- names -------------------------------------------------------------------------------------------

_SIDE_WORDS = {"l": "left", "left": "left", "r": "right", "right": "right"}
_STRIP_PREFIXES = ("DEF-", "ORG-", "CC_Base_", "RL_")


def split_name(name: str) -> tuple[str, str, int | None]:
    """``(side, core, segment)``: side ``left``/``right``/``""``, the core lower-case without
    separators, and a Rigify-style trailing segment number (``upper_arm.L.001`` → 1) or None."""
    text = name.rsplit(":", 1)[-1]  # Mixamo's namespaces: mixamorig:, mixamorig1:, …
    for prefix in _STRIP_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix):]
    segment = None
    if match := re.match(r"^(.+?[._\-][LRlr])[._](\d{3})$", text):
        text, segment = match.group(1), int(match.group(2))
    side = ""
    patterns = (
        r"^(?P<side>[Ll]eft|[Rr]ight)[._\- ]?(?P<core>.+)$",  # LeftArm, leftUpperArm, Left_Arm
        r"^(?P<core>.+?)[._\- ](?P<side>[LRlr]|[Ll]eft|[Rr]ight)$",  # upper_arm.L, upperarm_l, hand.l
        r"^(?P<side>[LRlr])[._\- ](?P<core>.+)$",  # L_Upperarm (CC), l_upperarm (Genesis 9)
        r"^(?P<side>[lr])(?P<core>[A-Z].+)$",  # lShldrBend (Genesis 8)
    )
    for pattern in patterns:
        if match := re.match(pattern, text):
            side, text = _SIDE_WORDS[match.group("side").lower()], match.group("core")
            break
    text = re.sub(r"[._](x|X)$", "", text)  # Auto-Rig Pro's centre suffix
    core = re.sub(r"[^0-9a-z]", "", text.lower())
    return side, core, segment


# joint: normalised cores, best first ("" side for centre joints). The end is the bone's head unless
# written "core:tail".
_BODY_NAMES: dict[str, tuple[str, ...]] = {
    "neck": ("spine004", "neck", "neck01", "necklower", "neck1", "necktwist01"),
    "shoulder": ("upperarm", "arm", "shldrbend", "armstretch"),
    "elbow": ("forearm", "lowerarm", "forearmbend", "forearmstretch"),
    "wrist": ("hand",),
    "hip": ("thigh", "upleg", "upperleg", "thighbend", "thighstretch"),
    "knee": ("shin", "leg", "calf", "lowerleg", "legstretch"),
    "ankle": ("foot",),
    "eye": ("eye",),
    "ear": ("ear",),
}
_CENTRE_NAMES: dict[str, tuple[str, ...]] = {
    "nose": ("nose002", "nosetip", "nose:tail"),
    "head": ("spine006", "head"),
    "head_top": ("headtopend", "headend", "headtop"),
    "hips": ("hips", "hip", "pelvis", "spine"),
}
_FINGER_NAMES: dict[str, tuple[str, ...]] = {
    "thumb": ("thumb", "handthumb"),
    "index": ("findex", "index", "handindex"),
    "middle": ("fmiddle", "middle", "mid", "handmiddle"),
    "ring": ("fring", "ring", "handring"),
    "pinky": ("fpinky", "pinky", "handpinky"),
}
# VRM's humanoid bone names (the VRM add-on's data): joint -> VRM name.
VRM_BODY = {
    "neck": "neck", "head": "head", "left_shoulder": "leftUpperArm", "right_shoulder": "rightUpperArm",
    "left_elbow": "leftLowerArm", "right_elbow": "rightLowerArm", "left_wrist": "leftHand", "right_wrist": "rightHand",
    "left_hip": "leftUpperLeg", "right_hip": "rightUpperLeg", "left_knee": "leftLowerLeg", "right_knee": "rightLowerLeg",
    "left_ankle": "leftFoot", "right_ankle": "rightFoot", "left_eye": "leftEye", "right_eye": "rightEye",
}


def _convention(names: Sequence[str], declared: Mapping[str, str]) -> str:
    if declared:
        return "VRM humanoid"
    bare = [name.rsplit(":", 1)[-1] for name in names]
    if any(name.startswith("DEF-") for name in names):
        return "Rigify"
    if any(":" in name and name.lower().startswith("mixamorig") for name in names) or {"Hips", "LeftUpLeg"} <= set(bare):
        return "Mixamo"
    if any(name.startswith("CC_Base_") for name in names):
        return "Character Creator"
    if {"pelvis", "upperarm_l"} <= set(bare):
        return "Unreal mannequin"
    if {"lShldrBend", "rThighBend"} <= set(bare) or {"l_upperarm", "r_thigh"} <= set(bare):
        return "Daz Genesis"
    if any(name.endswith("_stretch.l") for name in bare) and any(name.endswith(".x") for name in bare):
        return "Auto-Rig Pro"
    if {"upper_arm.L", "thigh.R"} <= set(bare):
        return "Blender metarig"
    return ""


class _Index:
    """The armature's bones by normalised name, preferring deforming and DEF- bones."""

    def __init__(self, bones: Sequence[Bone]) -> None:
        self.by_name = {bone.name: bone for bone in bones}
        self.rigify = any(bone.name.startswith("DEF-") for bone in bones)
        self.keys: dict[tuple[str, str], list[Bone]] = {}
        for bone in bones:
            side, core, segment = split_name(bone.name)
            if segment is not None:
                continue  # Rigify's twist segments (upper_arm.L.001): the chain's first segment holds the joint
            if self.rigify and not bone.name.startswith(("DEF-", "ORG-")):
                continue  # a control bone: its place is for the animator's hand, not the body
            self.keys.setdefault((side, core), []).append(bone)
        for found in self.keys.values():
            found.sort(key=lambda b: (not b.deform, not b.name.startswith("DEF-"), len(b.name)))

    def find(self, side: str, cores: Iterable[str]) -> JointRef | None:
        for core in cores:
            core, _, end = core.partition(":")
            if found := self.keys.get((side, core)):
                return JointRef(found[0].name, end or "head")
        return None


def _by_names(index: _Index, result: HumanoidMap, declared: Mapping[str, str]) -> None:
    for joint, vrm_name in VRM_BODY.items():
        if declared.get(vrm_name) in index.by_name:
            result.joints[joint], result.source[joint] = JointRef(declared[vrm_name]), "VRM humanoid"
    for part, cores in _BODY_NAMES.items():
        for side in ("left", "right"):
            joint = f"{side}_{part}"
            ref = index.find(side, cores)
            if part in ("eye", "ear") and ref and not _on_the_body(index.by_name[ref.bone]):
                ref = None  # a control bone off the face (Rigify's eye target floats in front of it)
            if joint not in result.joints and ref:
                result.joints[joint], result.source[joint] = ref, "name"
    if "neck" not in result.joints and (ref := index.find("", _BODY_NAMES["neck"])):
        result.joints["neck"], result.source["neck"] = ref, "name"
    if ref := index.find("", _CENTRE_NAMES["nose"]):
        result.joints["nose"], result.source["nose"] = ref, "name"


def _on_the_body(bone: Bone) -> bool:
    return bone.deform or bone.name.startswith("ORG-")


# --- structure ---------------------------------------------------------------------------------------

def _sub(a: Vec, b: Vec) -> Vec:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])


def _dot(a: Vec, b: Vec) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Vec, b: Vec) -> Vec:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _norm(a: Vec) -> float:
    return math.sqrt(_dot(a, a))


def _unit(a: Vec) -> Vec:
    length = _norm(a) or 1.0
    return (a[0] / length, a[1] / length, a[2] / length)


class _Tree:
    def __init__(self, bones: Sequence[Bone]) -> None:
        self.bones = {bone.name: bone for bone in bones}
        self.children: dict[str | None, list[Bone]] = {}
        for bone in bones:
            parent = bone.parent if bone.parent in self.bones else None
            self.children.setdefault(parent, []).append(bone)
        self._points: dict[str, list[Vec]] = {}
        zs = [p[2] for bone in bones for p in (bone.head, bone.tail)]
        self.height = (max(zs) - min(zs)) if zs else 0.0

    def subtree_points(self, bone: Bone) -> list[Vec]:
        if bone.name not in self._points:
            points = [bone.head, bone.tail]
            for child in self.children.get(bone.name, []):
                points += self.subtree_points(child)
            self._points[bone.name] = points
        return self._points[bone.name]

    def extending(self, bone: Bone) -> list[Bone]:
        """The children whose subtrees reach past the bone's own end: chains going on (fingers from a
        hand), not the twist, corrective and accessory bones riggers hang along a bone."""
        length = _norm(_sub(bone.tail, bone.head))
        return [child for child in self.children.get(bone.name, [])
                if max(_norm(_sub(p, bone.head)) for p in self.subtree_points(child)) > 1.2 * length]

    def follow(self, bone: Bone, score) -> list[Bone]:
        """The chain from ``bone`` down its children, taking the best-scoring child each step."""
        chain = [bone]
        while kids := self.children.get(chain[-1].name):
            chain.append(max(kids, key=score))
        return chain


def _deforming_tree(bones: Sequence[Bone]) -> list[Bone]:
    """The deforming bones, each parented to its nearest deforming ancestor (control and mechanism
    bones between them dropped); all bones when none deforms."""
    by_name = {bone.name: bone for bone in bones}
    deforming = [bone for bone in bones if bone.deform]
    if not deforming:
        return list(bones)
    relinked = []
    for bone in deforming:
        parent = bone.parent
        seen = {bone.name}
        while parent in by_name and not by_name[parent].deform and parent not in seen:
            seen.add(parent)
            parent = by_name[parent].parent
        relinked.append(Bone(bone.name, parent if parent in by_name else None, bone.head, bone.tail, True, bone.axes))
    return relinked


def _pick_joint(points: list[Vec], end: Vec, ratio: float) -> tuple[int, int]:
    """Indices (root joint, middle joint) in ``points`` whose two segments to ``end`` best match
    ``ratio`` (upper limb : lower limb); a clavicle or pelvis bone before the limb is skipped this way."""
    best, best_score = (0, max(len(points) - 1, 0)), math.inf
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            upper, lower = _norm(_sub(points[j], points[i])), _norm(_sub(end, points[j]))
            if upper <= 0 or lower <= 0:
                continue
            score = abs(math.log(upper / lower / ratio))
            if score < best_score - 1e-9:
                best, best_score = (i, j), score
    return best


def _chain_points(chain: list[Bone], stop: int) -> list[Vec]:
    return [bone.head for bone in chain[:stop]]


@dataclass
class _Shape:
    """What the structural pass found besides joints: the head bone and the rig's axes."""

    head: Bone | None = None
    hands: dict[str, Bone] = field(default_factory=dict)
    trees: dict[str, _Tree] = field(default_factory=dict)  # side: the deforming tree its hand was found in
    forward: Vec = (0.0, -1.0, 0.0)
    left: Vec = (1.0, 0.0, 0.0)


def _by_structure(bones: Sequence[Bone], result: HumanoidMap, shape: _Shape) -> None:
    tree = _Tree(bones)
    if tree.height <= 0:
        return
    height = tree.height
    roots = tree.children.get(None, [])
    if not roots:
        return
    queue = [max(roots, key=lambda b: len(tree.subtree_points(b)))]
    hips = None
    while queue:  # breadth first: the hips are the bone nearest the root where two chains run down
        bone = queue.pop(0)
        down = [child for child in tree.children.get(bone.name, [])
                if min(p[2] for p in tree.subtree_points(child)) < bone.head[2] - 0.3 * height]
        if len(down) >= 2:
            hips = bone
            break
        queue += tree.children.get(bone.name, [])
    if hips is None:
        return
    kids = tree.children[hips.name]
    legs = sorted(kids, key=lambda b: min(p[2] for p in tree.subtree_points(b)))[:2]
    spine_start = max((k for k in kids if k not in legs), key=lambda b: max(p[2] for p in tree.subtree_points(b)),
                      default=None)
    if spine_start is None and hips.head[2] < hips.tail[2]:
        spine_start = hips  # the hips bone itself runs up the spine
    leg_chains = [tree.follow(leg, lambda b: -min(p[2] for p in tree.subtree_points(b))) for leg in legs]
    shape.forward = _forward(leg_chains)
    shape.left = _unit(_cross((0.0, 0.0, 1.0), shape.forward))
    centre = hips.head
    for chain in leg_chains:
        points = [bone.head for bone in chain] + [chain[-1].tail]
        ankle = next((i for i in range(1, len(points) - 1)
                      if abs(points[i + 1][2] - points[i][2]) < _norm(_sub(points[i + 1], points[i])) * 0.7), len(points) - 1)
        side = "left" if _dot(_sub(points[ankle], centre), shape.left) > 0 else "right"
        if ankle >= 2:
            hip, knee = _pick_joint(points[:ankle], points[ankle], 1.05)
            _fill(result, f"{side}_hip", chain, points, hip)
            _fill(result, f"{side}_knee", chain, points, knee)
        _fill(result, f"{side}_ankle", chain, points, ankle)
    if spine_start is None:
        return
    _spine_and_arms(tree, spine_start, result, shape, height)


def _forward(leg_chains: list[list[Bone]]) -> Vec:
    """The rig faces where its feet point (horizontal part of the lowest bones), else Blender's front."""
    total = [0.0, 0.0]
    for chain in leg_chains:
        for bone in chain[-2:]:
            d = _sub(bone.tail, bone.head)
            if abs(d[2]) < math.hypot(d[0], d[1]):
                total[0] += d[0]
                total[1] += d[1]
    if math.hypot(*total) < 1e-6:
        return (0.0, -1.0, 0.0)
    return _unit((total[0], total[1], 0.0))


def _spine_and_arms(tree: _Tree, spine_start: Bone, result: HumanoidMap, shape: _Shape, height: float) -> None:
    bone: Bone | None = spine_start
    while bone is not None:
        kids = tree.children.get(bone.name, [])
        lateral = [child for child in kids
                   if max(abs(_dot(_sub(p, bone.head), shape.left)) for p in tree.subtree_points(child)) > 0.25 * height]
        if len(lateral) >= 2:
            break
        bone = max(kids, key=lambda b: max(p[2] for p in tree.subtree_points(b)), default=None)
    if bone is None:
        return
    chest = bone
    arms = sorted(lateral, key=lambda b: -max(abs(_dot(_sub(p, chest.head), shape.left)) for p in tree.subtree_points(b)))[:2]
    up = [child for child in tree.children.get(chest.name, []) if child not in arms]
    neck = max(up, key=lambda b: max(p[2] for p in tree.subtree_points(b)), default=None)
    if "neck" not in result.joints:
        result.joints["neck"], result.source["neck"] = (JointRef(neck.name) if neck else JointRef(chest.name, "tail")), "structure"
    if neck is not None:
        column = tree.follow(neck, lambda b: max(p[2] for p in tree.subtree_points(b)))
        top = column[-1]
        if len(column) >= 3:  # the skull is the longer of the top two: an end bone may sit on it
            shape.head = max(column[-2:], key=lambda b: _norm(_sub(b.tail, b.head)))
        elif len(column) == 2 and _norm(_sub(top.tail, top.head)) >= 0.05 * height:
            shape.head = top
    for arm in arms:
        chain = tree.follow(arm, lambda b: max(abs(_dot(_sub(p, chest.head), shape.left)) for p in tree.subtree_points(b)))
        hand_at = next((i for i, b in enumerate(chain) if len(tree.extending(b)) >= 3), None)
        if hand_at is None:
            hand_at = len(chain) - 1 if len(chain) >= 3 else len(chain)
        points = [b.head for b in chain] + [chain[-1].tail]
        side = "left" if _dot(_sub(points[hand_at], chest.head), shape.left) > 0 else "right"
        if hand_at >= 2:
            shoulder, elbow = _pick_joint(points[:hand_at], points[hand_at], 1.15)
            _fill(result, f"{side}_shoulder", chain, points, shoulder)
            _fill(result, f"{side}_elbow", chain, points, elbow)
        _fill(result, f"{side}_wrist", chain, points, hand_at)
        if hand_at < len(chain):
            shape.hands.setdefault(side, chain[hand_at])
            shape.trees[side] = tree


def _fill(result: HumanoidMap, joint: str, chain: list[Bone], points: list[Vec], index: int) -> None:
    if joint in result.joints or index >= len(points):
        return
    ref = JointRef(chain[index].name) if index < len(chain) else JointRef(chain[-1].name, "tail")
    result.joints[joint], result.source[joint] = ref, "structure"


# --- face --------------------------------------------------------------------------------------------

# Where face points sit on an average head, in units of the head bone's length (skull base → top):
# up the bone, forward, and to the character's left.
FACE_PROPORTIONS: dict[str, tuple[float, float, float]] = {
    "nose": (0.22, 0.62, 0.0),
    "left_eye": (0.40, 0.50, 0.18), "right_eye": (0.40, 0.50, -0.18),
    "left_ear": (0.25, 0.0, 0.45), "right_ear": (0.25, 0.0, -0.45),
}


def _face(index: _Index, tree_bones: Sequence[Bone], result: HumanoidMap, shape: _Shape) -> None:
    head = shape.head
    named_head = index.find("", _CENTRE_NAMES["head"])
    if named_head is not None:
        head = index.by_name[named_head.bone]
    if head is None:
        return
    forward = shape.forward
    eyes = [ref for side in ("left", "right") if (ref := result.joints.get(f"{side}_eye"))]
    if eyes:  # the eyes know where the face is better than the feet do
        middle = [sum(index.by_name[ref.bone].head[k] for ref in eyes) / len(eyes) for k in range(3)]
        toward = _sub((middle[0], middle[1], middle[2]), head.head)
        if math.hypot(toward[0], toward[1]) > 1e-6:
            forward = _unit((toward[0], toward[1], 0.0))
    axis = _sub(head.tail, head.head)
    length = _norm(axis)
    top = index.find("", _CENTRE_NAMES["head_top"])
    if top is not None and length < 0.05:
        axis = _sub(index.by_name[top.bone].head, head.head)
        length = _norm(axis)
    if length <= 1e-6:
        return
    up = _unit(axis)
    left = _unit(_cross(up, forward))
    forward = _cross(left, up)
    for joint, (u, f, s) in FACE_PROPORTIONS.items():
        if joint in result.joints:
            continue
        world = tuple(length * (u * up[k] + f * forward[k] + s * left[k]) for k in range(3))
        result.joints[joint] = JointRef(head.name, "offset", head.to_local((world[0], world[1], world[2])))
        result.source[joint] = "head shape"


# --- hands -------------------------------------------------------------------------------------------

def _finger_chain(index: _Index, side: str, finger: str, by_name: Mapping[str, Bone],
                  children: Mapping[str, list[Bone]]) -> list[Bone] | None:
    for core in _FINGER_NAMES[finger]:
        first = index.find(side, [f"{core}01", f"{core}1"])
        if first is None:
            continue
        chain = [by_name[first.bone]]
        while len(chain) < 4:
            nxt = [c for c in children.get(chain[-1].name, []) if split_name(c.name)[1].startswith(core)]
            if not nxt:
                break
            chain.append(nxt[0])
        if len(chain) >= 3:
            return chain
    return None


def _hand_refs(chains: Sequence[list[Bone]]) -> list[JointRef]:
    """Four keypoints per chain: the heads of its three segments and the tip (the next bone's head
    where an end bone follows, since imported tails point anywhere)."""
    refs: list[JointRef] = []
    for chain in chains:
        segments = chain[:3]
        refs += [JointRef(bone.name) for bone in segments]
        refs.append(JointRef(chain[3].name) if len(chain) >= 4 else JointRef(segments[-1].name, "tail"))
    return refs


def _hands(index: _Index, bones: Sequence[Bone], result: HumanoidMap, shape: _Shape) -> None:
    by_name = {bone.name: bone for bone in bones}
    children: dict[str, list[Bone]] = {}
    for bone in bones:
        if bone.parent:
            children.setdefault(bone.parent, []).append(bone)
    for side in ("left", "right"):
        wrist = result.joints.get(f"{side}_wrist")
        if wrist is None:
            continue
        chains = [_finger_chain(index, side, finger, by_name, children) for finger in FINGERS]
        if any(chain is None for chain in chains) and side in shape.hands:
            chains = _structural_fingers(shape.hands[side], shape.trees[side], shape)
        if chains and all(chain is not None for chain in chains):
            result.hands[side] = [wrist, *_hand_refs([chain for chain in chains if chain is not None])]


def _structural_fingers(hand: Bone, tree: _Tree, shape: _Shape) -> list[list[Bone] | None]:
    """Five chains below the hand, thumb first: in the rest pose the thumb is the most forward finger."""

    def reach(bone: Bone) -> float:
        return max(_norm(_sub(p, hand.head)) for p in tree.subtree_points(bone))

    chains = [tree.follow(kid, reach) for kid in tree.extending(hand)]
    chains = sorted((chain for chain in chains if len(chain) >= 3), key=lambda c: -reach(c[0]))[:5]
    if len(chains) != 5:
        return [None] * 5
    chains.sort(key=lambda chain: -_dot(_sub(chain[-1].head, hand.head), shape.forward))
    length = _norm(_sub(hand.tail, hand.head))
    trimmed: list[list[Bone] | None] = []
    for chain in chains:
        if len(chain) > 3 and _norm(_sub(chain[0].head, hand.head)) < 0.5 * length:
            chain = chain[1:]  # a metacarpal from the wrist: the finger's keypoints start at its knuckle
        trimmed.append(chain[:4])  # three segments and, where there is one, the end bone
    return trimmed


# --- the map -----------------------------------------------------------------------------------------

def infer(armature: str, bones: Sequence[Bone], *, declared: Mapping[str, str] | None = None,
          overrides: Mapping[str, str] | None = None) -> HumanoidMap:
    """The humanoid map of one armature: names, then structure, then the face; ``overrides``
    (joint → bone ref, the artist's) win over all three; ``declared`` is VRM humanoid data."""
    declared = dict(declared or {})
    index = _Index(bones)
    result = HumanoidMap(armature, _convention([bone.name for bone in bones], declared))
    _by_names(index, result, declared)
    shape = _Shape()
    _by_structure(_deforming_tree(bones), result, shape)
    if declared.get("head") in index.by_name:
        shape.head = index.by_name[declared["head"]]
    _face(index, bones, result, shape)
    _hands(index, bones, result, shape)
    for joint, text in (overrides or {}).items():
        ref = JointRef.parse(text)
        if joint in BODY_JOINTS and ref.bone in index.by_name:
            result.joints[joint], result.source[joint] = ref, "override"
        elif joint in BODY_JOINTS and not text:
            result.joints.pop(joint, None)
            result.source[joint] = "override: none"
    if not result.convention:
        result.convention = "inferred from structure" if result.body_count else "not a humanoid"
    elif "structure" in result.source.values():
        result.convention += " + structure"
    log.info("armature %s: %s", armature, result.summary())
    return result
