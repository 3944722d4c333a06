from edgeway.config.model import UpstreamConfig
from edgeway.upstream import Upstream


def make(balance="round_robin", servers=(("127.0.0.1:9001", 1),), backups=(), seed=1, **extra):
    cfg = {"balance": balance, "servers": [{"address": a, "weight": w} for a, w in servers]
           + [{"address": a, "backup": True} for a in backups], **extra}
    if balance == "hash" and "hash_key" not in cfg:
        cfg["hash_key"] = "$remote_addr"
    return Upstream("api", UpstreamConfig.model_validate(cfg), seed=seed)


def ports(servers):
    return [s.address.port if s else None for s in servers]
