"""Profiles: which backend each tool and the policy use, from a YAML file (default: the packaged one)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = resources.files("local_agent") / "profiles"


class ProfileError(ValueError):
    pass


def available_profiles() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in PROFILE_DIR.iterdir() if p.name.endswith(".yaml"))


def load_profile(name_or_path: str | Path | None = None) -> dict[str, Any]:
    """A packaged profile by name (``default``, ``cpu``…) or a YAML file path. Raises ProfileError with one line."""
    name = str(name_or_path or "default")
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ProfileError(f"profile file not found: {path}" if not path.exists() else
                               f"profile {path} is not a file")
        text = _read_text(path)
    else:
        packaged = PROFILE_DIR / f"{name}.yaml"
        if not packaged.is_file():
            raise ProfileError(f"unknown profile {name!r}; packaged profiles: {', '.join(available_profiles())}")
        text = packaged.read_text()
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as e:
        raise ProfileError(f"profile {name} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict) or not isinstance(data.get("tools"), dict):
        raise ProfileError(f"profile {name} needs a 'tools' mapping (one entry per tool with a 'backend')")
    for tool, config in data["tools"].items():
        if not isinstance(config, dict):
            raise ProfileError(f"profile {name}: tools.{tool} must be a mapping with a 'backend' key, got {config!r}")
    data.setdefault("policy", {"backend": "scripted"})
    if not isinstance(data["policy"], dict):
        raise ProfileError(f"profile {name}: policy must be a mapping with a 'backend' key, got {data['policy']!r}")
    return data


# The backends that read a defect atlas (their option ``atlas``), per tool, and what each reads when no ``atlas`` is set.
ATLAS_READERS = {"prompt_gen": {"template": "none"}, "image_gen": {"procedural": "none", "draem": "none"},
                 "quality_eval": {"calibrated": "default"}}   # tool -> backend -> its atlas when the option is unset


def atlas_options(profile: dict[str, Any], tools: Any = None) -> dict[str, str]:
    """Tool -> the atlas it reads (``none``, ``default`` or a file), for the tools (default: all) whose backend
    reads one."""
    out = {}
    for tool, readers in ATLAS_READERS.items():
        config = profile.get("tools", {}).get(tool, {})
        if (tools is None or tool in tools) and config.get("backend") in readers:
            out[tool] = str(config.get("atlas") or readers[config["backend"]])
    return out


def with_atlas(profile: dict[str, Any], atlas: str | Path) -> dict[str, Any]:
    """The profile with every atlas-reading tool pointed at ``atlas`` (a plant's own, ``local-agent atlas build``).
    Raises ProfileError with one line when the file is not an atlas."""
    from .tools.atlas import Atlas, AtlasError

    try:
        Atlas.load(Path(atlas))
    except AtlasError as e:
        raise ProfileError(f"--atlas: {e}") from None
    out = {**profile, "tools": {k: dict(v) for k, v in profile["tools"].items()}}
    for tool in atlas_options(profile):
        out["tools"][tool]["atlas"] = str(atlas)
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProfileError(f"profile {path} is not UTF-8 text (byte {e.start}); save it as UTF-8 YAML") from e
    except OSError as e:
        raise ProfileError(f"profile {path}: cannot read it ({e.strerror or e})") from e


def build_policy(config: dict[str, Any]):
    """The policy a profile names. Open-weight policies live with their backends and import lazily."""
    from .policies import POLICIES

    options = dict(config)
    name = options.pop("backend", "scripted")
    if name not in POLICIES:
        raise ProfileError(f"unknown policy backend {name!r}; choose one of: {', '.join(POLICIES)}")
    try:
        return POLICIES[name](**options)
    except (TypeError, ValueError) as e:
        from .tools.base import wrong_option

        raise ProfileError(f"bad options for policy {name!r}: {wrong_option(POLICIES[name], 'policy', options) or e}"
                           ) from e
