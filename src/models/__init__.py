from src.models.dcgan import DCGANDiscriminator, DCGANGenerator
from src.models.mlp import MLPDiscriminator, MLPGenerator

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "MLPDiscriminator", "MLPGenerator"]
