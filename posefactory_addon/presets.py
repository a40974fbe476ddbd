"""Prompt presets in the Prompt panel, as a standard Blender preset menu.

The presets are the dashboard's YAML files in the user's config dir
(``remote.core.presets``), not Blender's usual Python presets: Blender would run a
``.py`` preset as code, and the dashboard must be able to write them. So the
menu follows Blender's preset-menu contract (``preset_subdir``,
``preset_operator``, ``preset_add_operator``, listed with ``Menu.path_menu``,
its label the last preset applied) over that folder, the apply operator
reads YAML instead of running a script, and the add/remove operator is an
``AddPresetBase`` whose ``execute`` writes and deletes YAML.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import bpy
from bl_operators.presets import AddPresetBase
from bpy.props import StringProperty

from .operators import OperatorResult
from .properties import settings_of, to_blender, to_job

if TYPE_CHECKING:
    pass
from .remote.core.presets import PRESET_EXTENSIONS, PRESET_SETTINGS, PresetError, PromptPreset, delete_preset, load_preset, presets_dir, save_preset

log = logging.getLogger(__name__)

MENU_LABEL = "Prompt Presets"


class POSEFACTORY_MT_prompt_presets(bpy.types.Menu):
    bl_idname = "POSEFACTORY_MT_prompt_presets"
    bl_label = MENU_LABEL
    bl_description = "Prompt presets shared with the Pose Factory dashboard (YAML files in your config folder)"
    preset_subdir = "posefactory/prompt"
    preset_operator = "posefactory.apply_prompt_preset"
    preset_add_operator = "posefactory.prompt_preset_add"
    preset_extensions = set(PRESET_EXTENSIONS)

    def draw(self, context: bpy.types.Context | None) -> None:
        folder = presets_dir()
        if not folder.is_dir():
            layout = self.layout
            assert layout is not None
            layout.label(text="No presets yet: add one below or in the dashboard")
        self.path_menu([str(folder)] if folder.is_dir() else [], self.preset_operator,
                       props_default={"menu_idname": self.bl_idname},
                       filter_ext=lambda ext: ext.lower() in self.preset_extensions,
                       add_operator=self.preset_add_operator,
                       display_name=lambda path: bpy.path.display_name(Path(path).name, title_case=False))


class POSEFACTORY_OT_apply_prompt_preset(bpy.types.Operator):
    bl_idname = "posefactory.apply_prompt_preset"
    bl_label = "Apply Prompt Preset"
    bl_description = "Set the prompt, negative prompt, style, strength, steps and prompt strength from a preset"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})
    menu_idname: StringProperty(name="Menu ID Name", default=POSEFACTORY_MT_prompt_presets.bl_idname,
                                options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and hasattr(context.scene, "posefactory")

    def execute(self, context: bpy.types.Context) -> OperatorResult:
        try:
            preset = load_preset(Path(self.filepath))
        except PresetError as exc:
            self.report({"ERROR"}, f"Preset not applied: {exc}")
            return {"CANCELLED"}
        apply_preset(settings_of(context.scene), preset)
        menu = getattr(bpy.types, self.menu_idname, None)
        if menu is not None:
            menu.bl_label = preset.name  # Blender's preset menus show the last preset applied
        log.info("applied prompt preset %r", preset.name)
        return {"FINISHED"}


# fake-bpy types AddPresetBase's check/invoke unlike bpy.types.Operator's: the same methods at run time.
class POSEFACTORY_OT_prompt_preset_add(AddPresetBase, bpy.types.Operator):  # type: ignore[misc]
    bl_idname = "posefactory.prompt_preset_add"
    bl_label = "Add Prompt Preset"
    bl_description = "Save the prompt settings as a preset (shared with the dashboard), or remove one"
    preset_menu = POSEFACTORY_MT_prompt_presets.bl_idname
    preset_subdir = POSEFACTORY_MT_prompt_presets.preset_subdir

    # fake-bpy types AddPresetBase.execute as returning None; Blender's own returns {'FINISHED'} too.
    def execute(self, context: bpy.types.Context) -> OperatorResult:  # type: ignore[override]
        menu = getattr(bpy.types, self.preset_menu)
        removing = cast(Any, self)  # AddPresetBase declares these as bpy.props, which fake-bpy cannot type
        if removing.remove_name or removing.remove_active:
            name = menu.bl_label if removing.remove_active else self.name
            try:
                removed = delete_preset(name)
            except PresetError as exc:
                self.report({"WARNING"}, str(exc))
                return {"CANCELLED"}
            if not removed:
                self.report({"WARNING"}, f"No prompt preset named \"{name}\"")
                return {"CANCELLED"}
            menu.bl_label = MENU_LABEL
            return {"FINISHED"}
        name = self.name.strip()
        if not name:
            return {"FINISHED"}
        window_manager = context.window_manager
        if window_manager is not None and name == window_manager.preset_name:
            window_manager.preset_name = "New Preset"
        try:
            save_preset(preset_from_settings(settings_of(context.scene), name), overwrite=False)
        except PresetError as exc:
            self.report({"WARNING"}, f"Cannot create preset \"{name}\": {exc}")
            return {"CANCELLED"}
        menu.bl_label = name
        return {"FINISHED"}


def preset_from_settings(settings: Any, name: str) -> PromptPreset:
    values: dict[str, Any] = {key: to_job(key, getattr(settings, key)) for key in PRESET_SETTINGS}
    # Blender's floats are single precision: 0.35 reads back as 0.3499999940395355.
    rounded: dict[str, Any] = {key: round(value, 4) if isinstance(value, float) else value
                               for key, value in values.items()}
    return PromptPreset(name=name, **rounded)


def apply_preset(settings: Any, preset: PromptPreset) -> None:
    for key in PRESET_SETTINGS:
        setattr(settings, key, to_blender(key, getattr(preset, key)))


def draw_preset_row(layout: bpy.types.UILayout) -> None:
    """The preset menu with add and remove buttons, the way Blender's own preset rows look."""
    row = layout.row(align=True)
    row.menu(POSEFACTORY_MT_prompt_presets.bl_idname, text=POSEFACTORY_MT_prompt_presets.bl_label)
    row.operator(POSEFACTORY_OT_prompt_preset_add.bl_idname, text="", icon="ADD")
    cast(Any, row.operator(POSEFACTORY_OT_prompt_preset_add.bl_idname, text="", icon="REMOVE")).remove_active = True


CLASSES = (POSEFACTORY_MT_prompt_presets, POSEFACTORY_OT_apply_prompt_preset, POSEFACTORY_OT_prompt_preset_add)

register, unregister = bpy.utils.register_classes_factory(CLASSES)
