"""The provider contract suite (provider_contract.py) and one subclass per provider."""
