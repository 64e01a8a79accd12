"""Wire protocols over the one :class:`kaon.serve.runtime.Runtime`."""
