# The AI backends' optional parts, sourced by setup_pod.sh (its fail, changes,
# WORKSPACE and blender_env). Each runs only when asked and is idempotent.
#
#   POSEFACTORY_DIFFUSERS=1    the diffusers backend: a venv with CUDA torch +
#                              diffusers under $WORKSPACE (survives restarts) and
#                              its weights under $WORKSPACE/models (or
#                              POSEFACTORY_MODELS_DIR), fp16, only needed files;
#                              HF_TOKEN comes from $WORKSPACE/.env
#     POSEFACTORY_DIFFUSERS_PYTHON  a Python that already has torch + diffusers
#                              (a prepared image): no venv is built
#     POSEFACTORY_DIFFUSERS_VENV    default $WORKSPACE/venv-diffusers
#     POSEFACTORY_TORCH_SPEC, POSEFACTORY_TORCH_INDEX  the CUDA torch build
#     POSEFACTORY_SDXL_REPO, POSEFACTORY_CONTROLNET_OPENPOSE_REPO,
#     POSEFACTORY_CONTROLNET_DEPTH_REPO  the Hugging Face repos fetched
#   POSEFACTORY_AI_RENDER=1    AI Render 1.1.1 as $WORKSPACE/blender-addons/addons/AI-Render
#     POSEFACTORY_AI_RENDER_ZIP     a local copy of the release zip (else downloaded)

backends_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ "${POSEFACTORY_DIFFUSERS:-0}" = "1" ]; then
    ai_python="${POSEFACTORY_DIFFUSERS_PYTHON:-}"
    if [ -z "$ai_python" ]; then
        venv="${POSEFACTORY_DIFFUSERS_VENV:-$WORKSPACE/venv-diffusers}"
        torch_spec="${POSEFACTORY_TORCH_SPEC:-torch==2.13.0}"
        torch_index="${POSEFACTORY_TORCH_INDEX:-https://download.pytorch.org/whl/cu128}"
        stack="diffusers==0.42.* transformers==5.* safetensors huggingface_hub accelerate pillow"
        wanted_stack="$torch_spec $torch_index $stack"
        if [ "$(cat "$venv/.posefactory-installed" 2>/dev/null)" != "$wanted_stack" ]; then
            # The venv's Python must be the one the render job runs in (Blender's own
            # Python for a Blender binary), so that its site-packages import there.
            base_python="$(. "$blender_env" && if [ "$POSEFACTORY_RUNNER" = python ]; then echo "$POSEFACTORY_EXECUTABLE"; else
                bundled=("$(dirname "$(readlink -f "$POSEFACTORY_EXECUTABLE")")"/*/python/bin/python3*); echo "${bundled[0]}"; fi)"
            [ -x "$base_python" ] || fail "no Python to build the diffusers venv from (looked for Blender's: $base_python)"
            "$base_python" -m venv "$venv" || fail "cannot create the diffusers venv at $venv"
            "$venv/bin/python" -m pip install -q --index-url "$torch_index" "$torch_spec" ||
                fail "cannot install $torch_spec from $torch_index into $venv (offline?)"
            # shellcheck disable=SC2086
            "$venv/bin/python" -m pip install -q $stack || fail "cannot install $stack into $venv (offline?)"
            printf '%s\n' "$wanted_stack" > "$venv/.posefactory-installed"
            changes+=("built the diffusers venv")
        fi
        ai_python="$venv/bin/python"
    fi
    models_dir="${POSEFACTORY_MODELS_DIR:-$WORKSPACE/models}"
    fetched="$("$ai_python" "$backends_dir/fetch_models.py" "$models_dir" \
        "sdxl=${POSEFACTORY_SDXL_REPO:-stabilityai/stable-diffusion-xl-base-1.0}" \
        "controlnet-openpose=${POSEFACTORY_CONTROLNET_OPENPOSE_REPO:-xinsir/controlnet-openpose-sdxl-1.0}" \
        "controlnet-depth=${POSEFACTORY_CONTROLNET_DEPTH_REPO:-diffusers/controlnet-depth-sdxl-1.0}" 2>&1)" ||
        fail "${fetched#fetch_models: }"
    case "$fetched" in downloaded*) changes+=("$fetched");; esac
fi

if [ "${POSEFACTORY_AI_RENDER:-0}" = "1" ]; then
    addon="$WORKSPACE/blender-addons/addons/AI-Render"
    if [ ! -f "$addon/__init__.py" ]; then
        staging="$(mktemp -d "$WORKSPACE/blender-addons/.ai-render-XXXXXX")"
        zip="${POSEFACTORY_AI_RENDER_ZIP:-}"
        if [ -z "$zip" ]; then
            zip="$staging/AI-Render.zip"
            url="${POSEFACTORY_AI_RENDER_URL:-https://github.com/benrugg/AI-Render/releases/download/v1.1.1/AI-Render-v1.1.1.zip}"
            curl -fsSL --retry 3 -o "$zip" "$url" || { rm -rf "$staging"; fail "cannot download AI Render from $url (offline? set POSEFACTORY_AI_RENDER_ZIP)"; }
        fi
        [ -f "$zip" ] || { rm -rf "$staging"; fail "AI Render zip $zip not found"; }
        "${POSEFACTORY_DIFFUSERS_PYTHON:-python3}" -m zipfile -e "$zip" "$staging/x" >/dev/null 2>&1 ||
            { rm -rf "$staging"; fail "$zip is not a readable zip"; }
        # The add-on checks its own package name: the folder must be named exactly AI-Render.
        [ -f "$staging/x/AI-Render/__init__.py" ] ||
            { rm -rf "$staging"; fail "$zip has no AI-Render/ folder at its top (AI Render only runs from a folder named exactly AI-Render)"; }
        mkdir -p "$(dirname "$addon")"
        mv "$staging/x/AI-Render" "$addon"
        rm -rf "$staging"
        changes+=("installed AI Render")
    fi
fi
