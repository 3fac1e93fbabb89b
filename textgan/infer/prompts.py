"""Prompts from the command line or a file: one prompt per line, blank lines and `#` comments skipped.

Standard library only (the command line checks its input before torch is imported).
"""

from textgan.errors import UsageError


def read_prompt_file(path: str) -> list:
    """The prompts of `path` in file order (duplicates kept: each is its own row of images)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError as e:
        raise UsageError(f"--prompts {path}: no such file; give a text file with one prompt per line") from e
    except IsADirectoryError as e:
        raise UsageError(f"--prompts {path} is a directory; give a text file with one prompt per line") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--prompts {path} cannot be read as UTF-8 text: {e}") from e
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise UsageError(f"--prompts {path} holds no prompt (only blank lines or # comments); write one prompt "
                         "per line")
    return prompts


def check_prompts(prompts) -> list:
    """The prompts as a list of stripped strings; UsageError when there is none or one is empty."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = [str(p).strip() for p in prompts]
    if not prompts:
        raise UsageError("no prompt given: pass --prompt TEXT (repeatable) or --prompts FILE")
    if not all(prompts):
        raise UsageError("an empty prompt was given; every --prompt needs some text")
    return prompts
