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
2. **Structure** (``skeleton_shape.py``): for names never seen, the skeleton's shape: the hips where
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

from .bones import Bone, JointRef, cross, norm, sub, unit
from .jobspec import COCO18_JOINTS
from .skeleton_shape import Shape, by_structure, deforming_tree, structural_fingers

log = logging.getLogger(__name__)

BODY_JOINTS = COCO18_JOINTS
FINGERS = ("thumb", "index", "middle", "ring", "pinky")
# Fewer body joints than this on screen and the OpenPose ControlNet has too little to follow.
MIN_BODY_JOINTS = 12


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


@dataclass(frozen=True)
class SkeletonCheck:
    """What an item's OpenPose image would give the ControlNet: ``empty`` (nothing to follow: no paid
    step may run on it), or a ``line`` saying what is thin (fewer than 12 body joints on screen, as a
    portrait has: the job goes on and says so); no line when the skeleton is whole enough."""

    line: str = ""
    empty: bool = False


def check_skeletons(report: list[dict]) -> SkeletonCheck:
    """The check of one item's OpenPose report (``control_images.openpose_on_screen``)."""
    if not report:
        return SkeletonCheck("openpose control: no armature deforms a mesh the render shows: the OpenPose image "
                             "would be empty", empty=True)
    best = max(report, key=lambda r: r["on_screen"])
    if best["on_screen"] >= MIN_BODY_JOINTS:
        return SkeletonCheck()
    missing = ", ".join(best["missing"][:8]) + (" …" if len(best["missing"]) > 8 else "")
    said = (f"openpose control: armature {best['armature']!r} ({best['convention']}) has {best['on_screen']} of "
            f"{len(BODY_JOINTS)} body joints on screen")
    fix = "set them in the Pose Joints panel or with --bone-map"
    if best["on_screen"] == 0:
        return SkeletonCheck(f"{said}: the OpenPose image would be empty (missing: {missing}); {fix}", empty=True)
    return SkeletonCheck(f"{said}, fewer than {MIN_BODY_JOINTS}: the pose is only partly conditioned "
                         f"(missing: {missing}); if the frame holds more of the body, {fix}")


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


# --- face --------------------------------------------------------------------------------------------

# Where face points sit on an average head, in units of the head bone's length (skull base → top):
# up the bone, forward, and to the character's left.
FACE_PROPORTIONS: dict[str, tuple[float, float, float]] = {
    "nose": (0.22, 0.62, 0.0),
    "left_eye": (0.40, 0.50, 0.18), "right_eye": (0.40, 0.50, -0.18),
    "left_ear": (0.25, 0.0, 0.45), "right_ear": (0.25, 0.0, -0.45),
}


def _face(index: _Index, tree_bones: Sequence[Bone], result: HumanoidMap, shape: Shape) -> None:
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
        toward = sub((middle[0], middle[1], middle[2]), head.head)
        if math.hypot(toward[0], toward[1]) > 1e-6:
            forward = unit((toward[0], toward[1], 0.0))
    axis = sub(head.tail, head.head)
    length = norm(axis)
    top = index.find("", _CENTRE_NAMES["head_top"])
    if top is not None and length < 0.05:
        axis = sub(index.by_name[top.bone].head, head.head)
        length = norm(axis)
    if length <= 1e-6:
        return
    up = unit(axis)
    left = unit(cross(up, forward))
    forward = cross(left, up)
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


def _hands(index: _Index, bones: Sequence[Bone], result: HumanoidMap, shape: Shape) -> None:
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
            chains = structural_fingers(shape.hands[side], shape.trees[side], shape)
        if chains and all(chain is not None for chain in chains):
            result.hands[side] = [wrist, *_hand_refs([chain for chain in chains if chain is not None])]


# --- the map -----------------------------------------------------------------------------------------

def infer(armature: str, bones: Sequence[Bone], *, declared: Mapping[str, str] | None = None,
          overrides: Mapping[str, str] | None = None) -> HumanoidMap:
    """The humanoid map of one armature: names, then structure, then the face; ``overrides``
    (joint → bone ref, the artist's) win over all three; ``declared`` is VRM humanoid data."""
    declared = dict(declared or {})
    index = _Index(bones)
    result = HumanoidMap(armature, _convention([bone.name for bone in bones], declared))
    _by_names(index, result, declared)
    shape = Shape()
    by_structure(deforming_tree(bones), result, shape)
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
