"""Model towers (vision, text), fusion encoders and the VLPModel that holds them."""
