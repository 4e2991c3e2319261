"""The README's code runs as written: every `ddpm ...` command in it parses (flags that exist,
values of the right kind), and its Python program writes the PNG it promises."""

import re
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def ddpm_commands() -> list[list[str]]:
    """Every `ddpm ...` command of the README's shell blocks, as argv after `ddpm`; under
    torchrun (`torchrun ... -m ddpm ARGS`) too, unless it elides flags with `...`."""
    commands = []
    for block in code_blocks("bash"):
        text = block.replace("\\\n", " ")  # continued lines
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if words and Path(words[0]).name == "ddpm":
                    commands.append(words[1:])
                elif words[:1] == ["torchrun"] and "..." not in words:
                    i = words.index("-m")
                    assert words[i + 1] == "ddpm", part
                    commands.append(words[i + 2 :])
    return commands


def test_the_readme_has_commands_and_a_program():
    assert len(ddpm_commands()) >= 10
    assert len(code_blocks("python")) >= 1


@pytest.mark.parametrize("argv", ddpm_commands(), ids=lambda a: " ".join(a)[:60])
def test_every_command_in_the_readme_parses(argv, monkeypatch, tmp_path):
    from ddpm.cli import build_parser

    monkeypatch.chdir(tmp_path)  # output paths are checked against a fresh folder
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a flag that does not exist or a bad value
    assert args.command in parser.commands


def test_the_library_program_writes_a_png(tmp_path, monkeypatch, tiny_preset):
    """The README's program, run as written against a run folder of a tiny (untrained) model."""
    from ddpm.data.images import ImageDataset
    from ddpm.train import TrainConfig, save_checkpoint, setup

    (program,) = [b for b in code_blocks("python") if "import ddpm" in b]
    run = re.search(r'ddpm\.load\("([^"]+)"\)', program).group(1)
    png = re.search(r'"([^"]+\.png)"', program).group(1)
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(preset="tiny", out=run)
    _, _, arch, model_cfg, state = setup(cfg, ImageDataset(torch.zeros(4, 1, 8, 8).byte()))
    save_checkpoint(state, cfg, arch, model_cfg)
    assert len(program.strip().splitlines()) <= 5
    exec(compile(program, "README.md", "exec"), {})
    with Image.open(tmp_path / png) as img:
        assert img.width > 8 and img.height > 8
