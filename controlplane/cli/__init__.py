"""``fusionctl``: the command line of FusionPlane."""
