"""stockapp: the model, the data and the training loop (quickstart-pytorch's shape)."""

import torch
import torch.nn as nn
from datasets import Dataset
from flwr_datasets.partitioner import IidPartitioner
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    """An MLP for 8x8 digits (the parameter names of flowerbed's quickstart model)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.body(x))


partitioner = None  # Cache the partitioner


def load_data(partition_id: int, num_partitions: int, batch_size: int):
    """Load this node's IID share of digits: a train and a test loader."""
    global partitioner
    if partitioner is None:
        digits = load_digits()
        partitioner = IidPartitioner(num_partitions=num_partitions)
        partitioner.dataset = Dataset.from_dict({"x": (digits.data / 16.0).tolist(), "label": digits.target.tolist()})
    partition = partitioner.load_partition(partition_id)
    split = partition.train_test_split(test_size=0.2, seed=42)

    def loader(part, shuffle):
        x = torch.tensor(part["x"], dtype=torch.float32)
        y = torch.tensor(part["label"], dtype=torch.long)
        return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)

    return loader(split["train"], True), loader(split["test"], False)


def train(net, trainloader, epochs, lr, device):
    """Train the model on the training set."""
    net.to(device)
    criterion = torch.nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    running_loss = 0.0
    for _ in range(epochs):
        for x, y in trainloader:
            optimizer.zero_grad()
            loss = criterion(net(x.to(device)), y.to(device))
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
    return running_loss / (epochs * len(trainloader))


def test(net, testloader, device):
    """Validate the model on the test set."""
    net.to(device)
    criterion = torch.nn.CrossEntropyLoss()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for x, y in testloader:
            outputs = net(x.to(device))
            loss += criterion(outputs, y.to(device)).item()
            correct += (torch.max(outputs.data, 1)[1] == y.to(device)).sum().item()
    accuracy = correct / len(testloader.dataset)
    loss = loss / len(testloader)
    return loss, accuracy
