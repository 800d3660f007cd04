"""Stand-in for torchaudio in the LLaMA-Factory test venv: no torchaudio build exists for torch 2.13, and
LLaMA-Factory imports it at module level although only audio datasets call it. Any use fails loudly."""


def __getattr__(name):
    raise ImportError(f"torchaudio.{name}: this venv has a stub torchaudio (text-only SFT tests)")
