# The AI backends' optional parts, sourced by setup_pod.sh (its fail, changes,
# env_line, WORKSPACE and state_dir). Each runs only when asked and is idempotent.
#
#   POSEFACTORY_DIFFUSERS=1    the diffusers backend: a venv with CUDA torch +
#                              diffusers under $WORKSPACE (survives restarts), built
#                              from a plain Python (the AI worker's own process;
#                              never Blender's, where accelerate cannot import), and
#                              its weights under $WORKSPACE/models (or
#                              POSEFACTORY_MODELS_DIR), fp16, only needed files;
#                              HF_TOKEN comes from $WORKSPACE/.env. The AI Python is
#                              checked to import torch, diffusers, transformers and
#                              accelerate, and recorded in $WORKSPACE/posefactory/ai.env
#                              (POSEFACTORY_AI_PYTHON=..., sourced by pod_agent.sh for jobs)
#     POSEFACTORY_DIFFUSERS_PYTHON  a Python that already has torch + diffusers
#                              (a prepared image): no venv is built
#     POSEFACTORY_DIFFUSERS_VENV    default $WORKSPACE/venv-diffusers
#     POSEFACTORY_AI_BASE_PYTHON    the Python the venv is made from (default python3;
#                              needs venv and ensurepip)
#     POSEFACTORY_TORCH_SPEC, POSEFACTORY_TORCH_INDEX  the CUDA torch build
#     POSEFACTORY_WHEELS            a folder of wheels: both installs offline from it
#                              (pip --no-index --find-links), no index is asked
#     POSEFACTORY_SDXL_REPO, POSEFACTORY_CONTROLNET_OPENPOSE_REPO,
#     POSEFACTORY_CONTROLNET_DEPTH_REPO  the Hugging Face repos fetched
#   POSEFACTORY_AI_RENDER=1    AI Render 1.1.1 as $WORKSPACE/blender-addons/addons/AI-Render
#     POSEFACTORY_AI_RENDER_ZIP     a local copy of the release zip (else downloaded)

backends_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ "${POSEFACTORY_DIFFUSERS:-0}" = "1" ]; then
    ai_python="${POSEFACTORY_DIFFUSERS_PYTHON:-}"
    venv_built=""
    if [ -z "$ai_python" ]; then
        venv="${POSEFACTORY_DIFFUSERS_VENV:-$WORKSPACE/venv-diffusers}"
        torch_spec="${POSEFACTORY_TORCH_SPEC:-torch==2.13.0}"
        torch_index="${POSEFACTORY_TORCH_INDEX:-https://download.pytorch.org/whl/cu128}"
        stack="diffusers==0.42.* transformers==5.* safetensors huggingface_hub accelerate pillow"
        # A plain Python, never Blender's: diffusers runs in the AI worker's own process,
        # and importing accelerate inside Blender's Python dies on a circular import.
        base_python="${POSEFACTORY_AI_BASE_PYTHON:-python3}"
        base_identity="$("$base_python" -c 'import sys, venv, ensurepip; print(sys.executable, sys.version.split()[0])' 2>/dev/null)" ||
            fail "POSEFACTORY_AI_BASE_PYTHON=$base_python is missing or cannot make venvs (needs venv and ensurepip; on Debian: apt-get install python3-venv)"
        if [ -n "${POSEFACTORY_WHEELS:-}" ]; then
            [ -d "$POSEFACTORY_WHEELS" ] || fail "POSEFACTORY_WHEELS=$POSEFACTORY_WHEELS is not a folder"
            torch_source=(--no-index --find-links "$POSEFACTORY_WHEELS")
            stack_source=(--no-index --find-links "$POSEFACTORY_WHEELS")
            source_name="the wheels in $POSEFACTORY_WHEELS"
            missing_hint="(is every wheel there?)"
        else
            torch_source=(--index-url "$torch_index")
            stack_source=()
            source_name="$torch_index"
            missing_hint="(offline? set POSEFACTORY_WHEELS to a folder of wheels)"
        fi
        # What the venv was built with: another base Python (its version is the venv's ABI),
        # spec or source means a fresh venv.
        wanted_stack="python $base_identity; $torch_spec from $source_name; $stack"
        if [ "$(cat "$venv/.posefactory-installed" 2>/dev/null)" != "$wanted_stack" ]; then
            # --clear: nothing of a venv built from another Python (Blender's, before) is kept.
            "$base_python" -m venv --clear "$venv" >/dev/null || fail "cannot create the diffusers venv at $venv with $base_python"
            "$venv/bin/python" -m pip install -q "${torch_source[@]}" "$torch_spec" ||
                fail "cannot install $torch_spec from $source_name into $venv $missing_hint"
            # shellcheck disable=SC2086
            "$venv/bin/python" -m pip install -q "${stack_source[@]}" $stack ||
                fail "cannot install $stack from ${POSEFACTORY_WHEELS:-the package index} into $venv $missing_hint"
            venv_built=1
        fi
        ai_python="$venv/bin/python"
    fi
    # Jobs (pod_agent.sh --run) start the AI worker with the Python recorded here.
    ai_env="$state_dir/ai.env"
    wanted_ai_env="$(env_line POSEFACTORY_AI_PYTHON "$ai_python")"
    # Importing torch and diffusers takes seconds and setup runs before every job:
    # check a Python only when it is new or was just built.
    if [ -n "$venv_built" ] || [ "$(cat "$ai_env" 2>/dev/null)" != "$wanted_ai_env" ]; then
        import_error="$("$ai_python" -c 'import sys
try:
    import torch, diffusers, transformers, accelerate
except Exception as exc:  # an ImportError, or what a broken package raises while importing
    first_line = str(exc).splitlines()[0][:300] if str(exc) else ""
    print(f"{type(exc).__name__}: {first_line}")
    sys.exit(1)' 2>/dev/null)" ||
            fail "the AI Python $ai_python cannot import torch, diffusers, transformers and accelerate: ${import_error:-it does not run}"
        if [ -n "$venv_built" ]; then
            # Written only once the stack imports: a broken build is built again next time.
            printf '%s\n' "$wanted_stack" > "$venv/.posefactory-installed"
            changes+=("built the diffusers venv")
        fi
        printf '%s\n' "$wanted_ai_env" > "$ai_env.tmp"
        mv -f "$ai_env.tmp" "$ai_env"
        changes+=("recorded the AI Python")
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
