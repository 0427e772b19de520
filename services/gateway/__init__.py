"""The gateway: the front door that fans utterances out to the encoders and reads conversations back."""
