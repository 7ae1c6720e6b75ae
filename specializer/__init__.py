"""Tempo-style program specializer for pystack (binding-time analysis, partial evaluation, guards)."""
