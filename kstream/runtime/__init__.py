"""The processing runtime: worker loop, node processor, offsets."""
