"""The label-supervised model: a decoder backbone (LoRA-adapted), pooling, and a linear label head.

Final hidden states -> (pool) -> linear head -> logits; the head may start from the label words'
output rows (modeling/head.py), and no text is generated. The head and the
LoRA weights stay in fp32 even when the frozen backbone runs in bf16; 4/8-bit and bf16 heads are what
turned the official head NaN.

A long text read in windows is several rows of one batch; `groups` says which rows belong together,
and their pooled vectors are averaged before the head. What a problem type needs to turn outputs into
decisions (regression: the target's mean and std; multi-label: per-label thresholds) is kept in
buffers, saved with the trained weights so that a run's file pairs them with the weights they fit.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lsllama.config import ModelConfig
from lsllama.errors import RunError, UsageError
from lsllama.evaluation.scoring import DEFAULT_THRESHOLD
from lsllama.heap import release_free_heap_pages
from lsllama.modeling.head import label_word_rows
from lsllama.modeling.loading import load_backbone, model_source
from lsllama.modeling.masks import configure_attention, is_causal, text_config
from lsllama.modeling.pooling import pool
from lsllama.modeling.prefix import SharedPrefix, cache_keyword, rescales_with_length
from lsllama.modeling.problems import TargetScaling
from lsllama.tuning import CPU_MATH_ATTENTION_MAX_LENGTH


def attention_kernels(input_ids: torch.Tensor) -> contextlib.AbstractContextManager:
    short = input_ids.shape[-1] <= CPU_MATH_ATTENTION_MAX_LENGTH
    if input_ids.device.type == "cpu" and torch.is_grad_enabled() and short:
        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


FUSED_PROJECTIONS = {
    "q_proj": "qkv_proj",
    "k_proj": "qkv_proj",
    "v_proj": "qkv_proj",
    "gate_proj": "gate_up_proj",
    "up_proj": "gate_up_proj",
}
"""Projections some families fuse into one linear layer (Phi-3): a LoRA target naming a separate one
adapts the fused layer instead (so the paper's q,v adapts Phi-3's whole qkv_proj)."""
DECISION_BUFFERS = ("target_mean", "target_std", "thresholds")
"""Buffers saved with the trained weights: regression's target scaling, multi-label's thresholds."""


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 pays off on GPUs that support it and on CPUs with native bf16 matmul (AVX512-BF16 / AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "bf16" or (precision == "auto" and bf16_is_fast(device)):
        return torch.bfloat16
    return torch.float32


class LabelSupervisedModel(nn.Module):
    """Backbone + pooling + head. `task` is `sequence` (one label per text) or `token` (per token)."""

    def __init__(
        self,
        backbone: PreTrainedModel,
        num_labels: int,
        task: str,
        pooling: str,
        compute_dtype: torch.dtype,
        problem: str = "single_label",
        scaling: TargetScaling | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.task = task
        self.pooling = pooling
        self.compute_dtype = compute_dtype
        self.problem = problem
        self.shared_prefix: SharedPrefix | None = None
        """Ids every row starts with (`share_prefix`), read once per evaluation."""
        self.register_load_state_dict_post_hook(self.forget_prefix)
        self.head_from_words = False
        """Whether the head starts from the model's output rows for the label words (`build_model`): then
        the untrained model is already a classifier worth scoring (step 0)."""
        if problem == "regression":
            scaling = scaling or TargetScaling(0.0, 1.0)
            self.register_buffer("target_mean", torch.tensor(scaling.mean, dtype=torch.float32))
            self.register_buffer("target_std", torch.tensor(scaling.std, dtype=torch.float32))
        if problem == "multi_label":
            self.register_buffer("thresholds", torch.full((num_labels,), DEFAULT_THRESHOLD, dtype=torch.float32))
        hidden_size = text_config(backbone.config).hidden_size
        # A sequence head has no bias, like transformers' `*ForSequenceClassification.score`, so that a run
        # exports to the stock class exactly; a token head keeps one, as transformers' token heads do.
        self.score = nn.Linear(hidden_size, num_labels, bias=task == "token", dtype=torch.float32)
        nn.init.normal_(self.score.weight, std=0.02)
        if self.score.bias is not None:
            nn.init.zeros_(self.score.bias)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.compute_dtype)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, groups: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits, or (regression) values in the target's units. `groups` (rows,): the output row each
        input row belongs to, when some texts are read in several windows."""
        with self.autocast(input_ids.device), attention_kernels(input_ids):
            hidden, attention_mask = self.final_hidden(input_ids, attention_mask)
        # The head runs in fp32, outside autocast: cheap, and keeps logits and its gradients exact.
        if self.task == "token":
            return self.score(hidden.float())
        features = pool(hidden, attention_mask, self.pooling).float()
        if groups is not None:
            n = int(groups.max()) + 1
            summed = features.new_zeros(n, features.shape[-1]).index_add_(0, groups, features)
            features = summed / torch.bincount(groups, minlength=n).unsqueeze(-1).to(features.dtype)
        output = self.score(features)
        if self.problem == "regression":
            return output * self.target_std + self.target_mean
        return output

    def final_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's last hidden states and the mask that goes with them: at inference, when every row
        starts with the shared prefix, the columns after it only (the prefix's keys and values come cached)."""
        prefix = self.shared_prefix
        if prefix is not None and not self.training and not torch.is_grad_enabled():
            prefix.compute(self.backbone, input_ids.device)
            if prefix.covers(input_ids, attention_mask):
                cache = {cache_keyword(self.backbone): prefix.cache(input_ids.shape[0])}
                n = len(prefix)
                output = self.backbone(
                    input_ids=input_ids[:, n:], attention_mask=attention_mask, use_cache=True, **cache
                )
                return output.last_hidden_state, attention_mask[:, n:]
        output = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return output.last_hidden_state, attention_mask

    def share_prefix(self, ids: list[int]) -> None:
        """Declare the ids every input row starts with (a template's part before the text). Kept only where
        a row's pooled vector cannot depend on them being cached: a sequence task pooling its last token,
        under causal attention."""
        config = text_config(self.backbone.config)
        usable = len(ids) > 1 and self.task == "sequence" and self.pooling == "last" and is_causal(config)
        self.shared_prefix = SharedPrefix(ids) if usable and not rescales_with_length(config) else None

    def train(self, mode: bool = True) -> LabelSupervisedModel:
        if mode:
            self.forget_prefix()  # the weights are about to change
        return super().train(mode)

    def forget_prefix(self, *_: object) -> None:
        """The shared prefix's keys and values are recomputed at the next evaluation (the weights changed)."""
        if getattr(self, "shared_prefix", None) is not None:
            self.shared_prefix.forget()

    def _apply(self, fn, recurse: bool = True):
        self.forget_prefix()  # .to(device / dtype): the cached keys and values would stay where they were
        return super()._apply(fn, recurse)

    def set_thresholds(self, values: list[float]) -> None:
        """Multi-label decision thresholds (probabilities), one per label in label order."""
        with torch.no_grad():
            self.thresholds.copy_(torch.tensor(values, dtype=torch.float32))

    def merge_adapters(self) -> None:
        """Fold LoRA into the backbone's weights for inference (quantized weights cannot hold the update)."""
        if (
            isinstance(self.backbone, PeftModel)
            and not getattr(self.backbone, "is_loaded_in_4bit", False)
            and not (getattr(self.backbone, "is_loaded_in_8bit", False))
        ):
            self.backbone = self.backbone.merge_and_unload()
        self.forget_prefix()

    def saved_names(self) -> set[str]:
        """Names of what a run keeps, without touching the tensors (they may be shards of other processes')."""
        buffers = {n for n, _ in self.named_buffers() if n in DECISION_BUFFERS}
        return {n for n, p in self.named_parameters() if p.requires_grad} | buffers

    def load_weights(self, path: Path) -> None:
        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for a corrupt file
            raise RunError(f"{path}: cannot read weights ({exc})") from None
        expected = self.saved_names()
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise RunError(
                f"{path}: weights do not match the run's config "
                f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)"
            )
        with torch.no_grad():
            params = {**dict(self.named_parameters()), **dict(self.named_buffers())}
            self.forget_prefix()
            for name, tensor in state.items():
                if params[name].shape != tensor.shape:
                    raise RunError(
                        f"{path}: tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(params[name].shape)}"
                    )
                params[name].copy_(tensor)


def lora_targets(targets: list[str] | str, backbone: PreTrainedModel) -> list[str] | str:
    """The module names LoRA adapts in this backbone. A name the family lacks becomes its fused
    projection (see FUSED_PROJECTIONS); a name matching nothing is an error here rather than PEFT's.
    A string (`all-linear`, or a regular expression) is PEFT's to interpret."""
    if isinstance(targets, str):
        return targets
    names = [name for name, _ in backbone.named_modules() if name]

    def present(target: str) -> bool:
        return any(name == target or name.endswith("." + target) for name in names)

    resolved: list[str] = []
    for target in targets:
        if not present(target) and present(FUSED_PROJECTIONS.get(target, "")):
            target = FUSED_PROJECTIONS[target]
        if not present(target):
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in backbone.named_modules() if isinstance(m, nn.Linear)})
            raise UsageError(
                f"--lora-targets {target}: {type(backbone).__name__} has no such module "
                f"(its linear layers: {', '.join(linear)}; or use all-linear)"
            )
        if target not in resolved:
            resolved.append(target)
    return resolved


def lora_config(cfg: ModelConfig, backbone: PreTrainedModel | None = None) -> LoraConfig:
    """PEFT's LoRA settings; with the backbone, the targets are resolved for its family."""
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_targets if backbone is None else lora_targets(cfg.lora_targets, backbone),
        bias="none",
    )


def build_model(
    cfg: ModelConfig,
    task: str,
    num_labels: int,
    tokenizer: PreTrainedTokenizerBase,
    device: torch.device,
    problem: str = "single_label",
    scaling: TargetScaling | None = None,
    label_words: list[str] | None = None,
) -> LabelSupervisedModel:
    """Backbone with masks set and LoRA injected, plus a fresh head; the same code builds for load
    (which then reads the weights and the problem's buffers, `scaling` included, from the run).
    `label_words` (training only): what the labels are called, for `head_init: label_names`."""
    dtype = resolve_dtype(cfg.precision, device)
    backbone = load_backbone(cfg.name, tokenizer, dtype, cfg.trust_remote_code, cfg.quantization)
    configure_attention(backbone, bool(cfg.bidirectional), cfg.unmask_from_layer)
    if cfg.quantization:
        from peft import prepare_model_for_kbit_training

        backbone = prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        backbone.enable_input_require_grads()
    if cfg.lora_r > 0:
        with warnings.catch_warnings():  # scoped: the caller's filters are back as they were afterwards
            # PEFT (0.21) reads transformers' deprecated `is_gradient_checkpointing`: its warning, not ours.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            backbone = get_peft_model(backbone, lora_config(cfg, backbone), autocast_adapter_dtype=True)
        for param in backbone.parameters():
            if param.requires_grad:
                param.data = param.data.float()
        if dtype != torch.float32:
            # Under autocast the adapters' matmuls run in `dtype` whatever their input; PEFT's cast of each
            # adapted layer's input to the fp32 LoRA weights' dtype would only copy every activation (and
            # back again in the backward pass): on a CPU step that is more memory traffic than the LoRA math.
            for module in backbone.modules():
                if isinstance(module, BaseTunerLayer):
                    module.cast_input_dtype_enabled = False
    else:
        backbone.requires_grad_(False)
    model = LabelSupervisedModel(backbone, num_labels, task, cfg.pooling, dtype, problem, scaling)
    if label_words and cfg.head_init == "label_names" and task == "sequence" and problem != "regression":
        with torch.no_grad():
            model.score.weight.copy_(label_word_rows(backbone, tokenizer, label_words, model_source(cfg.name)))
        model.head_from_words = True
    model = model if cfg.quantization else model.to(device)
    release_free_heap_pages()
    return model
