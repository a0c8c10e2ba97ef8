"""Triplet generation: LLM backends, graders, designs and the resumable triplet builder."""

from cpo_engine.generation.backends import BackendConfig, OpenAIConfig, ReplayConfig, VLLMConfig
from cpo_engine.generation.builder import GenerateConfig, GenerationSummary, RayConfig, generate_triplets
from cpo_engine.generation.design import DesignConfig
from cpo_engine.generation.graders import get_grader
from cpo_engine.generation.store import read_generated
from cpo_engine.generation.templating import TemplateConfig
from cpo_engine.generation.types import Backend, GenerationRequest, GenerationResponse, RowKey, SamplingConfig

__all__ = [
    "GenerateConfig", "GenerationSummary", "RayConfig", "generate_triplets", "DesignConfig", "get_grader",
    "read_generated", "TemplateConfig", "Backend", "BackendConfig", "GenerationRequest", "GenerationResponse",
    "RowKey", "SamplingConfig", "OpenAIConfig", "ReplayConfig", "VLLMConfig",
]
