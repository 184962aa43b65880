package main

type deadCmd struct{}
