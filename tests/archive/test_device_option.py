"""--device on the two training commands: a bad value is refused by the parser, and CUDA asked
for where torch has none is a command error that says why (before any sampling or reading)."""
import pytest
import torch
from django.core.management import CommandError, call_command


@pytest.mark.parametrize("command", ["train_desom1", "train_desom2"])
def test_bad_device_is_refused(command):
    with pytest.raises(CommandError, match="auto, cpu, cuda or cuda:N"):
        call_command(command, "--device", "tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.django_db
@pytest.mark.parametrize("command", ["train_desom1", "train_desom2"])
def test_cuda_without_a_gpu_says_why(command):
    with pytest.raises(CommandError, match="CPU build|sees no CUDA device"):
        call_command(command, "--device", "cuda", verbosity=0)
