"""Pure protocol codecs: ZDS messages and their sans-IO cores, the Geneve header, offload arithmetic."""
