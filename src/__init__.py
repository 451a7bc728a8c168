"""lightning-gan: GANs and conditional GANs on MNIST / Fashion-MNIST with Lightning + Hydra."""
