print("qed-nbd: not yet implemented")
