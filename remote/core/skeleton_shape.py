"""The structural pass of the humanoid map: joints from a skeleton's shape when its names say nothing.

The hips are the bone nearest the root where two chains run down, the spine runs up from there,
the chest is where two chains run out sideways; shoulder/elbow/wrist and hip/knee/ankle are
picked along each chain by the limbs' proportions, the ankle where the chain turns forward, the
hand where five chains branch on past it. Left and right come from the rest pose: the character
faces where its feet point (else Blender's front, -Y).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .bones import Bone, JointRef, Vec, cross, dot, norm, sub, unit


class Found(Protocol):
    """Where the joints found so far go (a HumanoidMap): the structure only fills what is empty."""

    joints: dict[str, JointRef]
    source: dict[str, str]


class Tree:
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
        length = norm(sub(bone.tail, bone.head))
        return [child for child in self.children.get(bone.name, [])
                if max(norm(sub(p, bone.head)) for p in self.subtree_points(child)) > 1.2 * length]

    def follow(self, bone: Bone, score) -> list[Bone]:
        """The chain from ``bone`` down its children, taking the best-scoring child each step."""
        chain = [bone]
        while kids := self.children.get(chain[-1].name):
            chain.append(max(kids, key=score))
        return chain


def deforming_tree(bones: Sequence[Bone]) -> list[Bone]:
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


def pick_joint(points: list[Vec], end: Vec, ratio: float) -> tuple[int, int]:
    """Indices (root joint, middle joint) in ``points`` whose two segments to ``end`` best match
    ``ratio`` (upper limb : lower limb); a clavicle or pelvis bone before the limb is skipped this way."""
    best, best_score = (0, max(len(points) - 1, 0)), math.inf
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            upper, lower = norm(sub(points[j], points[i])), norm(sub(end, points[j]))
            if upper <= 0 or lower <= 0:
                continue
            score = abs(math.log(upper / lower / ratio))
            if score < best_score - 1e-9:
                best, best_score = (i, j), score
    return best


@dataclass
class Shape:
    """What the structural pass found besides joints: the head bone and the rig's axes."""

    head: Bone | None = None
    hands: dict[str, Bone] = field(default_factory=dict)
    trees: dict[str, Tree] = field(default_factory=dict)  # side: the deforming tree its hand was found in
    forward: Vec = (0.0, -1.0, 0.0)
    left: Vec = (1.0, 0.0, 0.0)


def by_structure(bones: Sequence[Bone], result: Found, shape: Shape) -> None:
    tree = Tree(bones)
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
    shape.left = unit(cross((0.0, 0.0, 1.0), shape.forward))
    centre = hips.head
    for chain in leg_chains:
        points = [bone.head for bone in chain] + [chain[-1].tail]
        ankle = next((i for i in range(1, len(points) - 1)
                      if abs(points[i + 1][2] - points[i][2]) < norm(sub(points[i + 1], points[i])) * 0.7), len(points) - 1)
        side = "left" if dot(sub(points[ankle], centre), shape.left) > 0 else "right"
        if ankle >= 2:
            hip, knee = pick_joint(points[:ankle], points[ankle], 1.05)
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
            d = sub(bone.tail, bone.head)
            if abs(d[2]) < math.hypot(d[0], d[1]):
                total[0] += d[0]
                total[1] += d[1]
    if math.hypot(*total) < 1e-6:
        return (0.0, -1.0, 0.0)
    return unit((total[0], total[1], 0.0))


def _spine_and_arms(tree: Tree, spine_start: Bone, result: Found, shape: Shape, height: float) -> None:
    bone: Bone | None = spine_start
    while bone is not None:
        kids = tree.children.get(bone.name, [])
        lateral = [child for child in kids
                   if max(abs(dot(sub(p, bone.head), shape.left)) for p in tree.subtree_points(child)) > 0.25 * height]
        if len(lateral) >= 2:
            break
        bone = max(kids, key=lambda b: max(p[2] for p in tree.subtree_points(b)), default=None)
    if bone is None:
        return
    chest = bone
    arms = sorted(lateral, key=lambda b: -max(abs(dot(sub(p, chest.head), shape.left)) for p in tree.subtree_points(b)))[:2]
    up = [child for child in tree.children.get(chest.name, []) if child not in arms]
    neck = max(up, key=lambda b: max(p[2] for p in tree.subtree_points(b)), default=None)
    if "neck" not in result.joints:
        result.joints["neck"], result.source["neck"] = (JointRef(neck.name) if neck else JointRef(chest.name, "tail")), "structure"
    if neck is not None:
        column = tree.follow(neck, lambda b: max(p[2] for p in tree.subtree_points(b)))
        top = column[-1]
        if len(column) >= 3:  # the skull is the longer of the top two: an end bone may sit on it
            shape.head = max(column[-2:], key=lambda b: norm(sub(b.tail, b.head)))
        elif len(column) == 2 and norm(sub(top.tail, top.head)) >= 0.05 * height:
            shape.head = top
    for arm in arms:
        chain = tree.follow(arm, lambda b: max(abs(dot(sub(p, chest.head), shape.left)) for p in tree.subtree_points(b)))
        hand_at = next((i for i, b in enumerate(chain) if len(tree.extending(b)) >= 3), None)
        if hand_at is None:
            hand_at = len(chain) - 1 if len(chain) >= 3 else len(chain)
        points = [b.head for b in chain] + [chain[-1].tail]
        side = "left" if dot(sub(points[hand_at], chest.head), shape.left) > 0 else "right"
        if hand_at >= 2:
            shoulder, elbow = pick_joint(points[:hand_at], points[hand_at], 1.15)
            _fill(result, f"{side}_shoulder", chain, points, shoulder)
            _fill(result, f"{side}_elbow", chain, points, elbow)
        _fill(result, f"{side}_wrist", chain, points, hand_at)
        if hand_at < len(chain):
            shape.hands.setdefault(side, chain[hand_at])
            shape.trees[side] = tree


def _fill(result: Found, joint: str, chain: list[Bone], points: list[Vec], index: int) -> None:
    if joint in result.joints or index >= len(points):
        return
    ref = JointRef(chain[index].name) if index < len(chain) else JointRef(chain[-1].name, "tail")
    result.joints[joint], result.source[joint] = ref, "structure"


def structural_fingers(hand: Bone, tree: Tree, shape: Shape) -> list[list[Bone] | None]:
    """Five chains below the hand, thumb first: in the rest pose the thumb is the most forward finger."""

    def reach(bone: Bone) -> float:
        return max(norm(sub(p, hand.head)) for p in tree.subtree_points(bone))

    chains = [tree.follow(kid, reach) for kid in tree.extending(hand)]
    chains = sorted((chain for chain in chains if len(chain) >= 3), key=lambda c: -reach(c[0]))[:5]
    if len(chains) != 5:
        return [None] * 5
    chains.sort(key=lambda chain: -dot(sub(chain[-1].head, hand.head), shape.forward))
    length = norm(sub(hand.tail, hand.head))
    trimmed: list[list[Bone] | None] = []
    for chain in chains:
        if len(chain) > 3 and norm(sub(chain[0].head, hand.head)) < 0.5 * length:
            chain = chain[1:]  # a metacarpal from the wrist: the finger's keypoints start at its knuckle
        trimmed.append(chain[:4])  # three segments and, where there is one, the end bone
    return trimmed
