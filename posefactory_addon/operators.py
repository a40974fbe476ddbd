"""Operators: one click in the sidebar, findable with F3, scriptable as
``bpy.ops.posefactory.*``. Errors reach the artist as one line (self.report)."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Literal

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import api, host_lookup, preferences, ui_channel
from .batch import refresh_pose_list
from .errors import SubmitError
from .jobs import MANAGER
from .properties import RESOLUTION_ITEMS, job_property, settings_of, to_job
from .remote.core.jobspec import SETTINGS
from .remote.core.pod_output import PodOutputError
from .remote.jobs.hosts import test_connection
from .results import import_folder

log = logging.getLogger(__name__)

# What execute and invoke return, as bpy.types.Operator declares it.
OperatorResult = set[Literal["RUNNING_MODAL", "CANCELLED", "FINISHED", "PASS_THROUGH", "INTERFACE"]]


def connection_status(host: str) -> str | None:
    """The last Test Connection outcome for ``host`` (kept by the timer from the UI channel)."""
    return MANAGER.connection_checks.get(host)


class SceneSettingsOperator:
    """Operators that work on the open file with the add-on registered: they
    need a scene carrying the settings (there is none while Blender loads a
    file, or in some script contexts)."""

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and hasattr(context.scene, "posefactory")


class POSEFACTORY_OT_render_remote(SceneSettingsOperator, bpy.types.Operator):
    bl_idname = "posefactory.render_remote"
    bl_label = "Render on RunPod"
    bl_description = ("Pack a copy of this scene, render it on the remote GPU host, enhance it with Stability SDXL "
                      "and bring the images back (the open file is not touched)")
    bl_options = {"REGISTER"}

    # Optional overrides for scripts: every job setting (added below the class) and these; an option not
    # given (Blender's is_property_set) leaves the scene's setting as it is.
    host: StringProperty(name="Host", options={"SKIP_SAVE"})
    resolution: EnumProperty(name="Resolution", items=RESOLUTION_ITEMS, default="AUTO", options={"SKIP_SAVE"})
    skip_ai: BoolProperty(name="Skip AI Step", default=False, options={"SKIP_SAVE"})

    def overrides(self) -> dict:
        values = {name: getattr(self, name) for name in api.OVERRIDES
                  if name in self.__annotations__ and self.properties.is_property_set(name)}
        if self.skip_ai:
            values["use_ai"] = False
        return {name: to_job(name, value) for name, value in values.items()}

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        try:
            handle = api.submit(context.scene, **self.overrides())
        except SubmitError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Pose Factory: job {handle.job_id} submitted to {handle.tracked.host}")
        return {"FINISHED"}


POSEFACTORY_OT_render_remote.__annotations__.update(
    {each.name: job_property(each, options={"SKIP_SAVE"}) for each in SETTINGS})


class POSEFACTORY_OT_cancel_job(bpy.types.Operator):
    bl_idname = "posefactory.cancel_job"
    bl_label = "Cancel Pose Factory Job"
    bl_description = "Stop a running job at whatever stage it is (the pod job is stopped too)"

    job_id: StringProperty(name="Job", description="Job to cancel (empty: the most recent running job)",
                           options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(MANAGER.active())

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        active = {job.job_id: job for job in MANAGER.active()}
        job = active.get(self.job_id) if self.job_id else max(active.values(), key=lambda j: j.started_at, default=None)
        if job is None:
            self.report({"ERROR"}, f"No running job {self.job_id!r}")
            return {"CANCELLED"}
        job.cancel.set()
        self.report({"INFO"}, f"Cancelling job {job.job_id}")
        return {"FINISHED"}


class POSEFACTORY_OT_test_connection(SceneSettingsOperator, bpy.types.Operator):
    bl_idname = "posefactory.test_connection"
    bl_label = "Test Connection"
    bl_description = "Open a shell on the selected host and run a trivial command (in the background)"

    host: StringProperty(name="Host", options={"SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        host = self.host or settings_of(context.scene).host
        problem = preferences.offline(f"Testing {host}") if host != "local" else ""
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        try:
            config = host_lookup.resolve_host(context, host)
        except SubmitError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        MANAGER.connection_checks[host] = "checking…"

        def check() -> None:
            try:
                outcome = test_connection(config)
            except Exception as exc:  # the outcome must arrive, whatever happened
                log.exception("testing the connection to %s", host)
                outcome = f"failed: internal error ({type(exc).__name__}); details in the log"
            log.info("connection check %s: %s", host, outcome)
            ui_channel.post(ui_channel.ConnectionChecked(host, outcome))

        thread = threading.Thread(target=check, name=f"posefactory-check-{host}", daemon=True)
        thread.start()
        self.report({"INFO"}, f"Testing the connection to {host}…")
        return {"FINISHED"}


class POSEFACTORY_OT_estimate_cost(SceneSettingsOperator, bpy.types.Operator):
    bl_idname = "posefactory.estimate_cost"
    bl_label = "Estimate Cost"
    bl_description = "What the next job would cost with the current settings (GPU time and AI images)"

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        scene = context.scene
        assert scene is not None  # poll() checked it
        try:
            job, host = api.build_job(scene, context)
        except SubmitError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        cost = api.estimate_job(job, host_lookup.resolve_host(context, host).pod_type)
        self.report({"INFO"}, f"Estimated ${cost.total_usd:.3f}: {cost.images} image(s) ${cost.images_usd:.3f}, "
                              f"GPU ~{cost.gpu_seconds:.0f}s ${cost.gpu_usd:.3f}")
        return {"FINISHED"}


class POSEFACTORY_OT_import_results(SceneSettingsOperator, bpy.types.Operator):
    bl_idname = "posefactory.import_results"
    bl_label = "Import Pose Factory Results"
    bl_description = "Load the images of a job's results folder (manifest.json and ai-render-*.png) into Blender"

    directory: StringProperty(name="Results Folder", subtype="DIR_PATH")

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> OperatorResult:
        window_manager = context.window_manager
        assert window_manager is not None
        window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        folder = Path(bpy.path.abspath(self.directory))
        if not folder.is_dir():
            self.report({"ERROR"}, f"Not a folder: {folder}")
            return {"CANCELLED"}
        try:
            images = import_folder(folder)
        except PodOutputError as exc:
            self.report({"ERROR"}, f"Not imported: {exc}")
            return {"CANCELLED"}
        if not images:
            self.report({"ERROR"}, f"No Pose Factory images in {folder}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {len(images)} image(s): {', '.join(image.name for image in images)}")
        return {"FINISHED"}


class POSEFACTORY_OT_open_output(SceneSettingsOperator, bpy.types.Operator):
    bl_idname = "posefactory.open_output"
    bl_label = "Open Output Folder"
    bl_description = "Open the folder where job results are downloaded, in the system's file browser"

    job_id: StringProperty(name="Job", options={"SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        folder = preferences.output_dir(context) / self.job_id if self.job_id else preferences.output_dir(context)
        folder.mkdir(parents=True, exist_ok=True)
        bpy.ops.wm.path_open(filepath=str(folder))
        return {"FINISHED"}


class POSEFACTORY_OT_refresh_poses(SceneSettingsOperator, bpy.types.Operator):
    bl_idname = "posefactory.refresh_poses"
    bl_label = "Refresh Poses"
    bl_description = "List the scene's timeline markers and pose assets in the Batch panel (ticks are kept)"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        scene = context.scene
        assert scene is not None  # poll() checked it
        count = refresh_pose_list(scene)
        self.report({"INFO"}, f"{count} pose(s): timeline markers and pose assets")
        return {"FINISHED"}


CLASSES = (POSEFACTORY_OT_render_remote, POSEFACTORY_OT_refresh_poses, POSEFACTORY_OT_cancel_job, POSEFACTORY_OT_test_connection,
           POSEFACTORY_OT_estimate_cost, POSEFACTORY_OT_import_results, POSEFACTORY_OT_open_output)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
