"""Mascot Generator: turn an idea into a mascot with Kandinsky 2.2."""
