"""Tokenize: chat-template rendering, exact token masks, srft build/audit, trainer exports."""
