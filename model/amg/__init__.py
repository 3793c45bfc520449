"""The automatic mask generator (SA-1B's fully automatic stage).

    from model.amg import AMGConfig, AutomaticMaskGenerator
    generator = AutomaticMaskGenerator(predictor, AMGConfig.preset("fast"))
    masks = generator.generate(rgb)  # list[GeneratedMask], maybe empty

``grid`` holds the point grids and crops, ``filters`` the per-mask tests, NMS and clean-up,
``runs`` the compact storage of candidates, ``generator`` the procedure.
"""

from model.amg.generator import AMGConfig, AutomaticMaskGenerator, GeneratedMask

__all__ = ["AMGConfig", "AutomaticMaskGenerator", "GeneratedMask"]
