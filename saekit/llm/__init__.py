"""Language-model clients for automated interpretability: prompts, completions, cost estimates, a response cache.

Nothing here imports a provider's SDK until a client for it is made: `pip install 'saekit[autointerp]'`
(anthropic, openai) adds them.
"""

from saekit.llm.anthropic_client import AnthropicClient
from saekit.llm.cache import CachedClient, CacheMode
from saekit.llm.client import Completion, CostEstimate, LLMClient, Prompt
from saekit.llm.environment import client_from_environment
from saekit.llm.openai_client import OpenAICompatibleClient
from saekit.llm.pricing import LIST_PRICES, LIST_PRICES_DATE, Prices, Tally, estimate_cost, list_prices, tally
from saekit.llm.retry import RetryPolicy
from saekit.llm.scripted import ScriptedReplies

__all__ = [
    "LIST_PRICES", "LIST_PRICES_DATE", "AnthropicClient", "CacheMode", "CachedClient", "Completion", "CostEstimate",
    "LLMClient", "OpenAICompatibleClient", "Prices", "Prompt", "RetryPolicy", "ScriptedReplies", "Tally",
    "client_from_environment", "estimate_cost", "list_prices", "tally",
]
