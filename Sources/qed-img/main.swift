print("qed-img: not yet implemented")
