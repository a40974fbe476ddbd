"""The Prompt panel's preset menu in real Blender (bpy 5.0.1): it lists the
dashboard's YAML presets, applies one, adds and removes them the way
Blender's own preset menus do."""
from __future__ import annotations

import json
import textwrap

from remote.core.presets import PromptPreset, list_presets, load_preset, save_preset

MENU_PROBE = """
import types
class Recorder:
    # Stands in for a UILayout while the real menu's draw() runs: records what it shows.
    def __init__(self, log):
        self.log = log
    def __getattr__(self, name):
        def call(*args, **kwargs):
            if name == "operator":
                props = types.SimpleNamespace()
                self.log.append((args[0], kwargs.get("text", ""), props))
                return props
            if name == "label":
                self.log.append(("label", kwargs.get("text", ""), None))
            return Recorder(self.log)
        return call
    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)

def menu_entries():
    log = []
    menu_class = bpy.types.POSEFACTORY_MT_prompt_presets
    fake = types.SimpleNamespace(layout=Recorder(log), bl_idname=menu_class.bl_idname,
                                 preset_operator=menu_class.preset_operator,
                                 preset_add_operator=menu_class.preset_add_operator,
                                 preset_extensions=menu_class.preset_extensions)
    fake.path_menu = lambda *a, **k: bpy.types.Menu.path_menu(fake, *a, **k)
    menu_class.draw(fake, bpy.context)
    return [(op, text, dict(vars(props)) if props is not None else None) for op, text, props in log]
"""


def test_preset_menu_lists_applies_adds_and_removes_yaml_presets(blender, tmp_path):
    folder = tmp_path / "presets"
    save_preset(PromptPreset(name="Rainy knight", prompt="a knight in the rain", negative_prompt="sun", steps=42,
                             strength=0.5, cfg_scale=9.0, style_preset="cinematic"), folder)
    (folder / "broken.yaml").write_text("steps: [1, 2]\n")
    result = blender.run(MENU_PROBE + textwrap.dedent("""
        import bpy
        scene = bpy.context.scene
        entries = menu_entries()
        applies = [e for e in entries if e[0] == "posefactory.apply_prompt_preset"]
        report(menu_idname=bpy.types.POSEFACTORY_MT_prompt_presets.bl_idname,
               preset_operator=bpy.types.POSEFACTORY_MT_prompt_presets.preset_operator,
               entries=[[e[1], e[2].get("filepath", ""), e[2].get("menu_idname", "")] for e in applies],
               remove_buttons=[e[2].get("name") for e in entries if e[0] == "posefactory.prompt_preset_add"
                               and e[2].get("remove_name")])
        good = [e for e in applies if e[1] == "Rainy knight"][0]
        report(apply=list(bpy.ops.posefactory.apply_prompt_preset(filepath=good[2]["filepath"],
                                                                 menu_idname=good[2]["menu_idname"])))
        s = scene.posefactory
        report(applied=[s.prompt, s.negative_prompt, s.steps, round(s.strength, 3), round(s.cfg_scale, 3), s.style_preset],
               label=bpy.types.POSEFACTORY_MT_prompt_presets.bl_label)
        bad = [e for e in applies if e[1] == "broken"][0]
        try:
            bpy.ops.posefactory.apply_prompt_preset(filepath=bad[2]["filepath"])
            report(bad="applied")
        except RuntimeError as exc:
            report(bad=str(exc), still=s.prompt)
        s.prompt = "an orc, night"
        s.steps = 20
        report(add=list(bpy.ops.posefactory.prompt_preset_add(name="Orc night")),
               again=list(bpy.ops.posefactory.prompt_preset_add(name="Orc night")),
               label_after_add=bpy.types.POSEFACTORY_MT_prompt_presets.bl_label)
        report(after_add=[e[1] for e in menu_entries() if e[0] == "posefactory.apply_prompt_preset"],
               orc_yaml=open(os.path.join(os.environ["POSEFACTORY_PRESETS_DIR"], "Orc_night.yaml")).read())
        report(remove=list(bpy.ops.posefactory.prompt_preset_add(remove_active=True)),
               label_after_remove=bpy.types.POSEFACTORY_MT_prompt_presets.bl_label)
        report(after_remove=[e[1] for e in menu_entries() if e[0] == "posefactory.apply_prompt_preset"])
    """), env={"POSEFACTORY_PRESETS_DIR": str(folder)})
    assert result["preset_operator"] == "posefactory.apply_prompt_preset"
    assert [entry[0] for entry in result["entries"]] == ["broken", "Rainy knight"]
    assert result["entries"][1][1] == str(folder / "Rainy_knight.yaml")
    assert result["entries"][1][2] == "POSEFACTORY_MT_prompt_presets"
    assert result["remove_buttons"] == ["broken", "Rainy knight"]
    assert result["apply"] == ["FINISHED"]
    assert result["applied"] == ["a knight in the rain", "sun", 42, 0.5, 9.0, "cinematic"]
    assert result["label"] == "Rainy knight"
    assert "broken.yaml: steps: [1, 2] must be a whole number" in result["bad"] and result["still"] == "a knight in the rain"
    assert result["add"] == ["FINISHED"] and result["again"] == ["CANCELLED"]
    assert result["label_after_add"] == "Orc night"
    assert result["after_add"] == ["broken", "Orc night", "Rainy knight"]
    # The preset Blender wrote is a YAML preset the dashboard reads.
    written = tmp_path / "Orc_night.yaml"
    written.write_text(result["orc_yaml"])
    orc = load_preset(written)
    assert (orc.name, orc.prompt, orc.steps) == ("Orc night", "an orc, night", 20), json.dumps(result)
    assert result["remove"] == ["FINISHED"] and result["label_after_remove"] == "Prompt Presets"
    assert result["after_remove"] == ["broken", "Rainy knight"]
    assert [p.name for p in list_presets(folder)[0]] == ["Rainy knight"]
