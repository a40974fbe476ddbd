"""View3D ▸ Sidebar ▸ Pose Factory: Prompt, Batch, Output, Remote and Jobs."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import bpy

from . import backends, host_lookup, pod_create, pod_state, preferences, presets, view
from .jobs import MANAGER
from .operators import connection_status
from .properties import settings_of
from .remote.core.platforms import default_config_dir
from .results import CONTROL_KINDS, thumbnail_source, thumbnails

log = logging.getLogger(__name__)


def layout_of(panel: bpy.types.Panel | bpy.types.Menu | bpy.types.AddonPreferences) -> bpy.types.UILayout:
    """The layout Blender sets before it calls draw (fake-bpy types it Optional)."""
    layout = panel.layout
    assert layout is not None
    return layout


if TYPE_CHECKING:  # the mixin is typed as the Panel it is mixed into (Blender registers only the panels)
    _PanelMixin = bpy.types.Panel
else:
    _PanelMixin = object


class PosefactoryPanel(_PanelMixin):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Pose Factory"


class POSEFACTORY_PT_main(PosefactoryPanel, bpy.types.Panel):
    bl_idname = "POSEFACTORY_PT_main"
    bl_label = "Pose Factory"

    def draw(self, context: bpy.types.Context) -> None:
        layout = layout_of(self)
        row = layout.row()
        row.scale_y = 1.5
        row.operator("posefactory.render_remote", icon="RENDER_STILL")
        shown = view.get(context.scene)  # computed on the timer when the settings change, never here
        lines: tuple[view.Line, ...] = shown.estimate if shown else (("Estimating…", "TIME"),)
        for text, icon in lines:
            layout.label(text=text, icon=icon)
        active = MANAGER.active()
        if active:
            job = active[0]
            layout.progress(factor=job.fraction, text=f"{job.stage}: {job.message}")
            layout.operator("posefactory.cancel_job", icon="CANCEL")
        latest = MANAGER.latest()
        if latest is not None and latest.scene_summary:
            layout.label(text=latest.scene_summary[:120], icon="PACKAGE")
        if latest is not None and latest.delivery_error:
            layout.label(text=latest.delivery_error[:120], icon="ERROR")
        if latest is not None and latest.item_notes:
            for note in latest.item_notes[:3]:
                layout.label(text=note[:120], icon="ERROR")
            if len(latest.item_notes) > 3:
                layout.label(text=f"… and {len(latest.item_notes) - 3} more (see the job's manifest.json)")


class POSEFACTORY_PT_prompt(PosefactoryPanel, bpy.types.Panel):
    bl_label = "Prompt"
    bl_parent_id = "POSEFACTORY_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        settings = settings_of(context.scene)
        layout = layout_of(self)
        presets.draw_preset_row(layout)
        layout.prop(settings, "use_ai")
        column = layout.column()
        column.enabled = settings.use_ai
        column.prop(settings, "backend")
        backends.draw(column, settings)  # each backend draws its own settings
        column.prop(settings, "prompt", text="")
        column.prop(settings, "negative_prompt", text="Avoid")
        column.prop(settings, "style_preset")
        column.prop(settings, "strength")
        column.prop(settings, "steps")
        column.prop(settings, "cfg_scale")
        column.prop(settings, "seed")
        column.prop(settings, "variations")


class POSEFACTORY_UL_poses(bpy.types.UIList):
    """The scene's markers and pose assets, each with a checkbox."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        row.label(text=item.name, icon="MARKER_HLT" if item.kind == "Marker" else "ARMATURE_DATA")


class POSEFACTORY_PT_batch(PosefactoryPanel, bpy.types.Panel):
    bl_label = "Batch"
    bl_parent_id = "POSEFACTORY_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        settings = settings_of(context.scene)
        layout = layout_of(self)
        layout.prop(settings, "pose_source")
        if settings.pose_source == "FRAMES":
            row = layout.row(align=True)
            row.prop(settings, "frame_start")
            row.prop(settings, "frame_end")
            row.prop(settings, "frame_step")
        elif settings.pose_source == "PICKED":
            row = layout.row()
            row.template_list("POSEFACTORY_UL_poses", "", settings, "poses", settings, "pose_index", rows=4)
            row.operator("posefactory.refresh_poses", text="", icon="FILE_REFRESH")
        layout.prop(settings, "camera_source")
        if settings.camera_source == "COLLECTION":
            layout.prop(settings, "camera_collection", text="")
        shown = view.get(context.scene)
        if shown and shown.batch[0]:
            layout.label(text=shown.batch[0], icon=shown.batch[1])


class POSEFACTORY_PT_output(PosefactoryPanel, bpy.types.Panel):
    bl_label = "Output"
    bl_parent_id = "POSEFACTORY_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        settings = settings_of(context.scene)
        layout = layout_of(self)
        layout.prop(settings, "resolution")
        shown = view.get(context.scene)
        if shown and shown.framing:  # None: the main panel shows why the job cannot be built
            layout.label(text=shown.framing, icon="IMAGE_REFERENCE")
        layout.prop(settings, "render_samples")
        layout.prop(settings, "render_device")
        layout.prop(settings, "allow_missing_files")
        layout.prop(settings, "autosave")
        row = layout.row()
        row.enabled = settings.autosave
        row.prop(settings, "autosave_path")
        layout.operator("posefactory.open_output", icon="FILE_FOLDER")


class POSEFACTORY_PT_remote(PosefactoryPanel, bpy.types.Panel):
    bl_label = "Remote"
    bl_parent_id = "POSEFACTORY_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        settings = settings_of(context.scene)
        layout = layout_of(self)
        layout.prop(settings, "host")
        layout.operator("posefactory.test_connection", icon="LINKED")
        status = connection_status(settings.host)
        if status:
            layout.label(text=status, icon="CHECKMARK" if status.startswith("connected") else "INFO")
        hosts_file = preferences.hosts_file(context)
        layout.label(text=f"Hosts: {hosts_file.name if hosts_file else 'built-in local only'}")
        if settings.host == "local" and host_lookup.local_demo_problem():
            # The demo host needs bash (not on Windows): say how to add a real pod instead.
            column = layout.column(align=True)
            column.label(text="The 'local' demo host needs bash, which this system lacks.", icon="ERROR")
            column.label(text="Add your pod to an ssh_hosts.yaml (see remote/ssh_hosts.example.yaml)")
            column.label(text=f"in {default_config_dir()} or pick it under Preferences > Hosts File,")
            column.label(text="then choose its host above.")
        pod_create.draw(layout, context)  # Create Pod…, and the create's progress
        pod_state.draw(layout, context)  # a RunPod pod host: state, $/h, uptime, Start / Stop / Terminate
        layout.operator("posefactory.estimate_cost", icon="INFO")


class POSEFACTORY_PT_jobs(PosefactoryPanel, bpy.types.Panel):
    bl_label = "Jobs"
    bl_parent_id = "POSEFACTORY_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        layout = layout_of(self)
        previews = thumbnails()
        records = MANAGER.history()[:8]
        if not records:
            layout.label(text="No jobs yet")
        for record in records:
            box = layout.box()
            row = box.row()
            if previews is not None and record.job_id not in previews:
                source = thumbnail_source(record)  # a job from an earlier session: load its thumbnail once
                if source is not None:
                    previews.load(record.job_id, str(source), "IMAGE")
            if previews is not None and record.job_id in previews:
                row.template_icon(icon_value=previews[record.job_id].icon_id, scale=3.0)
            column = row.column()
            column.label(text=record.job_id)
            cost = f"${record.cost_usd:.3f}" if record.cost_usd is not None else "cost pending"
            column.label(text=f"{record.status} on {record.host}, {cost}")
            if record.render_device:
                column.label(text=f"Rendered on {record.render_device}")
            if record.error:
                column.label(text=record.error[:80], icon="ERROR")
            draw_control_images(box, previews, record.job_id, record.images)
            cast(Any, column.operator("posefactory.open_output", text="Open", icon="FILE_FOLDER")).job_id = record.job_id
        layout.operator("posefactory.import_results", icon="IMPORT")


def draw_control_images(layout: bpy.types.UILayout, previews, job_id: str, images: list[str]) -> None:
    """The ControlNet inputs a diffusers job drew from the scene, next to its results."""
    if previews is None or not images:
        return
    folder = Path(images[0]).parent
    row = None
    for kind in CONTROL_KINDS:
        key, path = f"{job_id}:{kind}", folder / f"control-{kind}.png"
        if key not in previews and path.is_file():
            previews.load(key, str(path), "IMAGE")
        if key in previews:
            row = row or layout.row()
            column = row.column()
            column.template_icon(icon_value=previews[key].icon_id, scale=2.0)
            column.label(text=kind)


CLASSES = (POSEFACTORY_PT_main, POSEFACTORY_PT_prompt, POSEFACTORY_UL_poses, POSEFACTORY_PT_batch,
           POSEFACTORY_PT_output, POSEFACTORY_PT_remote, POSEFACTORY_PT_jobs)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
