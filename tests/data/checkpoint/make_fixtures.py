# Writes the torch.save fixtures that tests/test_checkpoint.cpp reads. Run with the
# PyTorch the fixtures should come from (they were made with PyTorch 1.13.1):
#   python3 tests/data/checkpoint/make_fixtures.py tests/data/checkpoint
# Tensor values follow simple formulas so that the test can check them without Python.
import collections
import sys

import torch


def state_dict():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = collections.OrderedDict()
    tensors["contiguous"] = base
    tensors["transposed"] = base.t()  # shares the storage, strides (1, 6)
    tensors["row_slice"] = base[1:3]  # storage offset 6, contiguous
    tensors["column_slice"] = base[:, 2:4]  # storage offset 2, strides (6, 1)
    tensors["half"] = torch.tensor([1.5, -2.25, 65504.0, 2.0**-24], dtype=torch.float16)
    tensors["bfloat16"] = torch.tensor([1.0, -3.5, 2.0**100], dtype=torch.bfloat16)
    tensors["long"] = torch.tensor([[1, -2, 2**40]], dtype=torch.int64)
    tensors["int"] = torch.tensor([7, -7], dtype=torch.int32)
    tensors["byte"] = torch.tensor([0, 255], dtype=torch.uint8)
    tensors["bool"] = torch.tensor([True, False, True])
    tensors["scalar"] = torch.tensor(0.25)
    tensors["empty"] = torch.zeros(0, 5)
    tensors["parameter"] = torch.nn.Parameter(torch.full((2,), 3.0))
    return tensors


def salesforce_style(tensors):
    # As Salesforce's training scripts save: model, optimizer state, config and epoch.
    weight = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    optimizer = torch.optim.AdamW([weight], lr=1e-5, weight_decay=0.05)
    weight.sum().backward()
    optimizer.step()
    config = {
        "image_size": 384,
        "vit": "base",
        "init_lr": 1e-05,
        "prompt": "a picture of ",
        "flags": [True, False, None],
        "betas": (0.9, 0.999),
        "huge": 2**70,
        "negative": -123456789012,
    }
    return {"model": tensors, "optimizer": optimizer.state_dict(), "config": config, "epoch": 4}


out = sys.argv[1] if len(sys.argv) > 1 else "."
tensors = state_dict()
torch.save(tensors, f"{out}/plain_state_dict.pth")
torch.save(salesforce_style(tensors), f"{out}/salesforce_protocol2.pth")
torch.save(salesforce_style(tensors), f"{out}/salesforce_protocol4.pth", pickle_protocol=4)
torch.save(tensors, f"{out}/legacy_format.pth", _use_new_zipfile_serialization=False)
