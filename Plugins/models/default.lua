-- The model recipes use unless told otherwise: kiri.models.fashion_mnist (a user plugin of this name changes it)
return function(opts)
    return kiri.models.fashion_mnist(opts)
end
